//! The command line's jobs, kept out of main.rs: argument structs (clap) and what each command does.
pub mod generate;
pub mod info;
pub mod noise;
pub mod output;
pub mod pictures;
