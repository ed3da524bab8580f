#![no_main]
segnode_fuzz::target!(multipart, MULTIPART);
