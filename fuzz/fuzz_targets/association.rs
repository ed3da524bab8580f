#![no_main]
segnode_fuzz::target!(association, ASSOCIATION);
