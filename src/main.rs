//! The `p2p-wgpu` command line. Thin: parse, call the library, report. Every failure is one line on stderr and a
//! non-zero exit code, never a panic.
use clap::{CommandFactory, Parser, Subcommand};

use p2p_wgpu::app::console::{out, say};
use p2p_wgpu::app::generate::GenerateArgs;
use p2p_wgpu::app::info::InfoArgs;
use p2p_wgpu::text::{TokenReport, Tokenizer};

#[derive(Parser)]
#[command(
    name = "p2p-wgpu",
    version,
    about = "Prompt-to-Prompt image editing on wgpu",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    /// Use the adapter whose name contains this text (case-insensitive). Backend: WGPU_BACKEND=vulkan|metal|dx12|gl.
    #[arg(long, global = true, env = "P2P_WGPU_ADAPTER")]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand: generate an image.
    #[command(flatten)]
    generate: GenerateArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print the GPU adapter, backend, driver, features, limits and cooperative-matrix configurations; with
    /// --model, the model's parameter bytes and planned activation memory.
    Info(InfoArgs),
    /// Tokenize TEXT and show each position: index, id, vocabulary token, decoded text and the word it belongs to.
    Tokens(TokensArgs),
    /// DDIM-invert a picture once (--image, --prompt describing it) into an inversion file (--out); edit from it
    /// with the main command's --inverted FILE, as often as wanted.
    Invert(p2p_wgpu::app::invert::InvertArgs),
    /// Run many jobs (a JSON Lines file of requests with ids) through one loaded model: resumable, shardable on
    /// Slurm array jobs and Kubernetes Indexed Jobs (--merge checks and merges the shards).
    Batch(p2p_wgpu::app::batch::BatchArgs),
    /// Serve a local web page for editing by clicking words (and its JSON API) on one loaded model.
    Serve(p2p_wgpu::app::serve::ServeArgs),
    /// Convert a single-file SD 1.x checkpoint (original CompVis key names, .safetensors) into a diffusers folder.
    Convert(ConvertArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("configs").required(true).args(["config_from", "preset"])))]
struct ConvertArgs {
    /// The checkpoint (.safetensors; pickles such as .ckpt are refused, with how to convert them).
    #[arg(long, value_name = "FILE")]
    checkpoint: std::path::PathBuf,
    /// Take the architecture (unet/vae/text_encoder config.json), tokenizer/ and scheduler/ from this diffusers
    /// folder of the same architecture.
    #[arg(long, value_name = "DIR")]
    config_from: Option<std::path::PathBuf>,
    /// Use built-in configs instead: sd15 (Stable Diffusion 1.5).
    #[arg(
        long,
        value_name = "NAME",
        value_parser = clap::builder::PossibleValuesParser::new(p2p_wgpu::convert::Preset::NAMES)
    )]
    preset: Option<String>,
    /// The diffusers folder to create (new or empty).
    #[arg(long, value_name = "DIR")]
    out: std::path::PathBuf,
    /// Store the weights as F16 (default: as stored in the checkpoint).
    #[arg(long)]
    fp16: bool,
}

#[derive(clap::Args)]
struct TokensArgs {
    /// Diffusers model folder: uses DIR/tokenizer/ and max length from DIR/text_encoder/config.json. Without it,
    /// the embedded CLIP ViT-L/14 tokenizer (SD 1.x), max length 77.
    #[arg(long, value_name = "DIR")]
    model: Option<std::path::PathBuf>,
    /// Print one JSON object instead of a table: "ids" (all max_len ids: BOS, tokens, EOS, pad), "tokens" (the
    /// vocabulary string of each position), "text" (each position decoded), "words" (the index into "prompt_words" of
    /// each position, null for BOS/EOS/pad), "prompt_words" (TEXT split on single spaces), "length" (positions
    /// BOS..=EOS), "truncated" (the cut end of TEXT, or null).
    #[arg(long)]
    json: bool,
    /// The prompt (quote it).
    text: String,
}

fn run(cli: Cli) -> p2p_wgpu::Result<()> {
    // The environment is read here, once, into the options the library takes.
    let mut gpu = p2p_wgpu::gpu::GpuOptions::from_env();
    if cli.adapter.is_some() {
        gpu.adapter = cli.adapter.clone();
    }
    let Some(command) = cli.command else {
        return p2p_wgpu::app::generate::run(&cli.generate, gpu);
    };
    match command {
        Command::Info(args) => p2p_wgpu::app::info::run(&args, gpu),
        Command::Invert(args) => p2p_wgpu::app::invert::run(&args, gpu),
        Command::Batch(args) => p2p_wgpu::app::batch::run(&args, gpu),
        Command::Serve(args) => p2p_wgpu::app::serve::run(&args, gpu),
        Command::Convert(args) => {
            use p2p_wgpu::convert::{ConfigSource, ConvertOptions, Preset, convert};
            let configs = match (args.config_from, args.preset) {
                (Some(dir), _) => ConfigSource::Folder(dir),
                (None, Some(name)) => ConfigSource::Preset(Preset::from_name(&name)?),
                (None, None) => return Err(p2p_wgpu::Error::input("convert needs --config-from DIR or --preset NAME")),
            };
            let opts = ConvertOptions { checkpoint: args.checkpoint, configs, out: args.out, fp16: args.fp16 };
            let report = convert(&opts)?;
            for note in &report.notes {
                say(&format!("p2p-wgpu: warning: {note}"));
            }
            out(&format!("{}\n", report.summary()))?;
            Ok(())
        }
        Command::Tokens(args) => {
            let tokenizer = match &args.model {
                Some(dir) => Tokenizer::from_model_dir(dir)?,
                None => Tokenizer::embedded_clip()?,
            };
            let report = TokenReport::new(&tokenizer, &args.text)?;
            if let Some(cut) = &report.encoded.truncated {
                say(&format!(
                    "p2p-wgpu: warning: the prompt is longer than {} tokens; cut: {cut:?}",
                    tokenizer.max_len()
                ));
            }
            if args.json {
                out(&format!("{}\n", report.to_json()))?;
            } else {
                out(&report.table())?;
            }
            Ok(())
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Some(m) = cli.command.is_none().then(|| cli.generate.usage_error()).flatten() {
        Cli::command().error(clap::error::ErrorKind::ArgumentConflict, m).exit();
    }
    match run(cli) {
        Ok(()) => {}
        // Stopped by SIGINT/SIGTERM (batch): the shell's convention for a signal-stopped job.
        Err(p2p_wgpu::Error::Cancelled) => std::process::exit(130),
        Err(e) => {
            say(&format!("p2p-wgpu: error: {e}"));
            std::process::exit(1);
        }
    }
}
