//! The command line's jobs, kept out of main.rs: argument structs (clap), turning them into library requests,
//! and what each command prints.
pub mod batch;
pub mod console;
pub mod generate;
pub mod info;
pub mod invert;
pub mod precision;
pub mod serve;
pub mod vae;
