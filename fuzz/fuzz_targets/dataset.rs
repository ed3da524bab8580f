#![no_main]
segnode_fuzz::target!(dataset, DATASET);
