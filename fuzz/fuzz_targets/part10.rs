#![no_main]
segnode_fuzz::target!(part10, PART10);
