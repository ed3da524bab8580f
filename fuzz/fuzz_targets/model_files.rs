#![no_main]
segnode_fuzz::target!(model_files, MODEL);
