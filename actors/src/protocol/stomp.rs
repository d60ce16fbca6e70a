//! The STOMP 1.2 frame codec (1.0 and 1.1 too): bounded decoding of a byte
//! stream into frames, and encoding of the frames Herald sends.
