#![no_main]
segnode_fuzz::target!(pdu, PDU);
