//! The `touchgate` command line: parse, load, hand over to the library.
//!
//! Output goes through a locked stdout with `write!`, never `print!`: a
//! reader that goes away (`touchgate audit … | head -1`) makes the next write
//! fail with `BrokenPipe`, and the command then ends quietly with status 0,
//! as ripgrep does, instead of panicking.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use touchgate::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "touchgate",
    version,
    about = "Reverse-proxy sidecar for server-side marketing touchpoint capture",
    after_help = "Exit status: each command's --help says its own. A usage error exits 2; a \
                  closed stdout (`| head`) ends any command quietly with 0."
)]
struct Cli {
    /// Log format on stderr (level from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum AuditFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: proxy, admin listener, pipeline and sinks.
    #[command(
        after_help = "Exit status: 0 after a clean drain on SIGTERM or SIGINT; 1 when it \
                      cannot start or stops on an error (an address in use, a sink that \
                      cannot be built); 2 when the config cannot be read or is invalid."
    )]
    Run {
        /// Defaults to $TOUCHGATE_CONFIG, then config/touchgate.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Try touchgate in one command: the proxy in front of a built-in sample app.
    #[command(
        after_help = "Exit status: 0 after Ctrl-C (SIGINT) or SIGTERM; 1 when it cannot \
                      start (an address in use, a data directory it cannot create)."
    )]
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "touchgate-data")]
        data_dir: PathBuf,
    },
    /// Validate a config file without binding anything.
    #[command(
        after_help = "Exit status: 0 when the config is valid; 2 when it cannot be read or \
                      has problems, one `PATH:LINE: key.path: message` line each on stderr."
    )]
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The data inventory (every field that can leave, and how), or a dry
    /// run of one raw HTTP/1.1 request through the pipeline.
    #[command(
        after_help = "Exit status: 0; 2 when the config is invalid or the --request is not \
                      a well-formed HTTP/1.1 request; 1 when the config or the request \
                      file cannot be read."
    )]
    Audit {
        #[arg(long)]
        config: Option<PathBuf>,
        /// A raw HTTP/1.1 request (file, or - for stdin): print the request
        /// the upstream would get and the events, as JSON. No network.
        #[arg(long)]
        request: Option<String>,
        /// The upstream's answer to assume for --request.
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// A raw HTTP/1.1 response (status line, headers, body) the
        /// upstream answers for --request, instead of --status.
        #[arg(long, conflicts_with = "status")]
        response: Option<PathBuf>,
        /// Inventory format.
        #[arg(long, value_enum, default_value_t = AuditFormat::Text)]
        format: AuditFormat,
    },
    /// Add the touchgate sidecar to every pod template in Kubernetes YAML.
    #[command(
        after_help = "Exit status: 0; 2 on input it cannot patch (invalid YAML, a pod \
                      template without containers, a port or name the sidecar needs is \
                      taken…); 1 when the file cannot be read."
    )]
    Inject {
        /// YAML file, or - for stdin (the default).
        #[arg(default_value = "-")]
        file: String,
        #[command(flatten)]
        sidecar: touchgate::cli::inject::SidecarArgs,
    },
    /// Inject the sidecar into new pods: a Kubernetes mutating admission
    /// webhook (POST /mutate, GET /healthz) over TLS.
    #[command(
        after_help = "Exit status: 0 after SIGTERM or SIGINT, once in-flight reviews are \
                      answered; 1 when it cannot start (a certificate or key it cannot \
                      load, an address in use)."
    )]
    Injector(touchgate::cli::injector::InjectorArgs),
    /// The operational checks over event files.
    #[command(
        after_help = "Exit status: 0 when no check is in alert; 1 when one is; 2 on input \
                      it cannot use (no event file, a path it cannot read, no event in the \
                      files or more malformed lines than --max-malformed, an invalid \
                      --config) or an --out file it cannot write."
    )]
    Report {
        /// Event files (JSON lines, .gz too) or directories of them.
        #[arg(long, num_args = 1.., required = true)]
        events: Vec<PathBuf>,
        /// Thresholds from this config's [checks] (defaults otherwise).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        format: touchgate::cli::report::ReportFormat,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Fail (exit 2, naming the first bad lines) when more than this
        /// share of lines is malformed: a fraction (0.01) or a percentage (1%).
        #[arg(long, value_parser = touchgate::cli::report::parse_share, default_value = "1%")]
        max_malformed: f64,
    },
}

fn config_path(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| std::env::var_os("TOUCHGATE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Write `text` to stdout. A `BrokenPipe` error is the reader gone, which
/// [`main`] turns into a quiet exit.
fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Whether `e` or one of its causes is a write to a closed pipe.
fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Load a config or print its problems (one per line) and exit 2.
fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        // The reader has what it wanted (`| head`): not a failure.
        Err(e) if is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("touchgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig { config } => {
            let path = config_path(config);
            match load(&path) {
                Ok(cfg) => {
                    // Read once more only to give each warning its line.
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    for line in cfg.warning_lines(&path.display().to_string(), &text) {
                        eprintln!("{line}");
                    }
                    emit(&format!("{}: ok\n", path.display()))?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(code) => Ok(code),
            }
        }
        Command::Audit {
            config,
            request,
            status,
            response,
            format,
        } => {
            let path = config_path(config);
            // The inventory and the dry run need no real secret or token,
            // so audit runs where production secrets are not available:
            // unset variables get placeholders of the right shape.
            let env = |k: &str| {
                if k == "TOUCHGATE_UPSTREAM" {
                    return std::env::var(k).ok();
                }
                std::env::var(k).ok().or_else(|| {
                    let upper = k.to_ascii_uppercase();
                    Some(if upper.contains("REDIS") {
                        "redis://127.0.0.1:6379".to_string()
                    } else if upper.contains("PG")
                        || upper.contains("POSTGRES")
                        || upper.contains("DATABASE")
                    {
                        "postgres://audit@127.0.0.1/audit".to_string()
                    } else {
                        "audit-placeholder-0123456789abcdef".to_string()
                    })
                })
            };
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let cfg = match Config::parse(&path.display().to_string(), &text, &env) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            match request {
                None => {
                    let inv = touchgate::cli::audit::inventory(&cfg);
                    match format {
                        AuditFormat::Text => emit(&touchgate::cli::audit::render_text(&inv))?,
                        AuditFormat::Json => {
                            emit(&(serde_json::to_string_pretty(&inv)? + "\n"))?;
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some(file) => {
                    use std::io::Read;
                    let mut raw = Vec::new();
                    if file == "-" {
                        std::io::stdin()
                            .read_to_end(&mut raw)
                            .context("reading stdin")?;
                    } else {
                        raw = std::fs::read(&file).with_context(|| format!("reading {file}"))?;
                    }
                    use touchgate::cli::audit::AppAnswer;
                    let answer = match &response {
                        Some(p) => {
                            let raw = std::fs::read(p)
                                .with_context(|| format!("reading {}", p.display()))?;
                            AppAnswer::parse(&raw)
                        }
                        None => AppAnswer::status(status),
                    };
                    let answer = match answer {
                        Ok(a) => a,
                        Err(e) => {
                            eprintln!("touchgate audit: {e}");
                            return Ok(ExitCode::from(2));
                        }
                    };
                    match touchgate::cli::audit::dry_run(cfg, &raw, answer, &env) {
                        Ok(run) => {
                            emit(&(serde_json::to_string_pretty(&run)? + "\n"))?;
                            Ok(ExitCode::SUCCESS)
                        }
                        Err(e) => {
                            eprintln!("touchgate audit: {e}");
                            Ok(ExitCode::from(2))
                        }
                    }
                }
            }
        }
        Command::Inject { file, sidecar } => {
            use std::io::Read;
            let mut input = String::new();
            if file == "-" {
                std::io::stdin()
                    .read_to_string(&mut input)
                    .context("reading stdin")?;
            } else {
                input =
                    std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
            }
            match touchgate::cli::inject::inject(&input, &sidecar.options()) {
                Ok(out) => {
                    emit(&out)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("touchgate inject: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Report {
            events,
            config,
            format,
            out,
            max_malformed,
        } => {
            let checks = match config {
                Some(path) => match load(&path) {
                    Ok(c) => c.checks,
                    Err(code) => return Ok(code),
                },
                None => config::ChecksConfig::default(),
            };
            let args = touchgate::cli::report::ReportArgs {
                events,
                format,
                out,
                checks,
                max_malformed,
            };
            match touchgate::cli::report::run(&args) {
                Ok(outcome) if outcome.alert => Ok(ExitCode::from(1)),
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(e) if is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("touchgate report: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Injector(args) => {
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            rt.block_on(touchgate::cli::injector::run(&args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { listen, data_dir } => {
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            rt.block_on(touchgate::cli::demo::run(
                &touchgate::cli::demo::DemoOptions { listen, data_dir },
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            let path = config_path(config);
            let cfg = match load(&path) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for line in cfg.warning_lines(&path.display().to_string(), &text) {
                tracing::warn!("{line}");
            }
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            rt.block_on(touchgate::app::serve_until_signal(cfg, &|k| {
                std::env::var(k).ok()
            }))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
