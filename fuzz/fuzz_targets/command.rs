#![no_main]
segnode_fuzz::target!(command, COMMAND);
