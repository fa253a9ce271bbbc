//! `gscip`: the GSCIP command-line tool.
#![forbid(unsafe_code)]

mod admin;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "gscip", version, about = "GSCIP: group-based secure communication for IP networks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario in the deterministic simulator (every GE runs the real protocol core).
    ///
    /// Exit codes: 0 every flow as expected and no plaintext leak; 1 otherwise; 2 bad scenario.
    Sim {
        /// The scenario file (TOML, see docs/scenarios.md).
        file: PathBuf,
        /// Print the report as JSON (SPEC section 11.2) instead of a table.
        #[arg(long)]
        json: bool,
        /// Seed of the simulator's random choices (overrides [sim] seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Probability that a packet is lost on each link it crosses (0..=1).
        #[arg(long, value_parser = probability)]
        loss: Option<f64>,
        /// Probability that a packet is delayed behind later ones on a link (0..=1).
        #[arg(long, value_parser = probability)]
        reorder: Option<f64>,
        /// One-way latency of every link, microseconds.
        #[arg(long)]
        delay_us: Option<u64>,
        /// Extra random latency per packet, up to this many microseconds.
        #[arg(long)]
        jitter_us: Option<u64>,
    },
    /// What a running gscipd holds: PIT entries, counters, held packets.
    Status {
        /// The daemon's control socket (default /run/gscip/NAME.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The GE's name, to find its default socket.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Administer a GMS (gmsd) through its REST API: groups, GEs, enrollment tokens, keys,
    /// audit. Exit codes: 0 done; 1 the GMS refused or is unreachable; 2 bad usage.
    Admin(admin::AdminArgs),
    /// The network-namespace lab (needs root).
    #[command(subcommand)]
    Lab(LabCommand),
    /// Management load (seed 001 section 5): the configuration items an administrator sets for
    /// a network with GSCIP and with IPsec/IKE, or changes between two networks.
    LoadReport {
        file: PathBuf,
        /// Count the items to change to go from FILE's network to this one.
        #[arg(long)]
        compare: Option<PathBuf>,
        /// With --compare: which changes count. `seed` (seed 001 §5.3-5.4): the items of the
        /// GEs that join, leave or move, and the policies others add toward a GE that joins;
        /// `complete`: every item at every element. Both totals are always shown.
        #[arg(long, default_value = "seed", value_parser = |s: &str| s.parse::<gscip_load::Convention>())]
        convention: gscip_load::Convention,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// Run a scenario on real Linux hosts: namespaces, gscipd in every GE, real TCP/UDP
    /// sockets, a capture on every link; prints the report (SPEC 11.2). Needs root.
    ///
    /// Exit codes: 0 every flow as expected and no plaintext leak; 1 otherwise; 2 bad scenario
    /// or environment.
    Run {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        /// Leave the lab up afterwards (prints how to enter it and how to clean up).
        #[arg(long)]
        keep: bool,
        /// Names every namespace PREFIX-NODE (1 to 8 of [a-z0-9]).
        #[arg(long, default_value = "gs")]
        prefix: String,
    },
    /// Build a scenario's network (namespaces, bridges, veth, addresses, routes) and leave it
    /// up for inspection. The GE daemons and flows come with `gscip lab run`.
    Up {
        file: PathBuf,
        /// Names every namespace PREFIX-NODE (1 to 8 of [a-z0-9]).
        #[arg(long, default_value = "gs")]
        prefix: String,
    },
    /// Remove a lab left up (by `lab up`, `--keep`, or a crash).
    Clean {
        #[arg(default_value = "gs")]
        prefix: String,
    },
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability in 0..=1"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim { file, json, seed, loss, reorder, delay_us, jitter_us } => {
            let o = gscip_sim::Overrides { seed, loss, reorder, delay_us, jitter_us };
            match gscip_sim::run_file(&file, &o) {
                Ok(report) => {
                    if json {
                        println!("{}", report.to_json());
                    } else {
                        print!("{}", report.to_table());
                    }
                    ExitCode::from(report.exit_code() as u8)
                }
                Err(e) => {
                    eprintln!("gscip sim: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Lab(LabCommand::Run { file, json, keep, prefix }) => lab_run(&file, json, keep, &prefix),
        Command::Lab(LabCommand::Up { file, prefix }) => {
            let scenario = match gscip_sim::Scenario::from_file(&file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("gscip lab: {e}");
                    return ExitCode::from(2);
                }
            };
            match gscip_lab::Lab::build(&scenario, &prefix) {
                Ok(mut lab) => {
                    lab.keep();
                    print!("{}", lab.how_to_enter());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gscip lab: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Status { socket, name, json } => status(socket, name, json),
        Command::Admin(a) => admin::run(a),
        Command::LoadReport { file, compare, convention, json } => {
            let load = |p: &PathBuf| gscip_sim::Scenario::from_file(p);
            let before = match load(&file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("gscip load-report: {e}");
                    return ExitCode::from(2);
                }
            };
            let out = match compare {
                None => {
                    let c = gscip_load::count(&before);
                    if json {
                        serde_json::to_string_pretty(&gscip_load::report_json(&c)).unwrap_or_default() + "\n"
                    } else {
                        gscip_load::report_table(&c)
                    }
                }
                Some(other) => {
                    let after = match load(&other) {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("gscip load-report: {e}");
                            return ExitCode::from(2);
                        }
                    };
                    let (b, a) = (gscip_load::count(&before), gscip_load::count(&after));
                    let ch = gscip_load::compare(&before, &after, convention);
                    if json {
                        serde_json::to_string_pretty(&gscip_load::compare_json(&b, &a, &ch)).unwrap_or_default() + "\n"
                    } else {
                        gscip_load::compare_table(&b, &a, &ch)
                    }
                }
            };
            print!("{out}");
            ExitCode::SUCCESS
        }
        Command::Lab(LabCommand::Clean { prefix }) => match gscip_lab::clean(&prefix) {
            Ok(n) => {
                println!("removed {n} namespaces of lab {prefix:?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gscip lab: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn lab_run(file: &std::path::Path, json: bool, keep: bool, prefix: &str) -> ExitCode {
    let scenario = match gscip_sim::Scenario::from_file(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gscip lab: {e}");
            return ExitCode::from(2);
        }
    };
    let work_dir = std::env::temp_dir().join(format!("gscip-lab-{prefix}"));
    // Ctrl-C: remove everything, then stop.
    let p = prefix.to_owned();
    let _ = ctrlc::set_handler(move || {
        let _ = gscip_lab::clean(&p);
        eprintln!("gscip lab: interrupted; the lab was removed");
        std::process::exit(130);
    });
    let opts = gscip_lab::run::RunOptions { keep, ..gscip_lab::run::RunOptions::new(prefix) };
    match gscip_lab::run::run_scenario(&scenario, &opts) {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            if !keep {
                let _ = std::fs::remove_dir_all(&work_dir);
            } else {
                eprintln!("keys, configurations, logs and the capture are in {}", work_dir.display());
            }
            ExitCode::from(report.exit_code() as u8)
        }
        Err(e) => {
            eprintln!("gscip lab: {}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}

fn status(socket: Option<PathBuf>, name: Option<String>, json: bool) -> ExitCode {
    use std::io::{Read, Write};
    let path = match (socket, name) {
        (Some(p), _) => p,
        (None, Some(n)) => PathBuf::from(format!("/run/gscip/{n}.sock")),
        (None, None) => {
            eprintln!("gscip status: give --socket PATH or --name GE");
            return ExitCode::from(2);
        }
    };
    let reply = std::os::unix::net::UnixStream::connect(&path).and_then(|mut c| {
        c.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
        c.write_all(b"status")?;
        c.shutdown(std::net::Shutdown::Write)?;
        let mut s = String::new();
        c.read_to_string(&mut s)?;
        Ok(s)
    });
    let text = match reply {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gscip status: {}: {e} (is gscipd running?)", path.display());
            return ExitCode::from(2);
        }
    };
    let v: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("gscip status: bad reply: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    println!(
        "{} ({} {}): {} held packets, {} negotiations in progress, {} path keys",
        v["name"].as_str().unwrap_or("?"),
        v["kind"].as_str().unwrap_or("?"),
        v["mode"].as_str().unwrap_or("?"),
        v["held_packets"],
        v["negotiations_in_progress"],
        v["path_keys"]
    );
    println!(
        "{:<48} {:<8} {:>5} {:>9} {:>8} {:>8} {:>6} {:>7}",
        "flow", "action", "group", "packets", "sealed", "opened", "auth!", "replay"
    );
    for e in v["pit"].as_array().into_iter().flatten() {
        println!(
            "{:<48} {:<8} {:>5} {:>9} {:>8} {:>8} {:>6} {:>7}",
            e["cid"].as_str().unwrap_or("?"),
            e["action"].as_str().unwrap_or("?"),
            e["group"].as_u64().map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
            e["packets"],
            e["sealed"],
            e["opened"],
            e["auth_failures"],
            e["replays"]
        );
    }
    let awake = &v["stay_awake"];
    if awake.is_object() {
        let round_trip =
            awake["dprp_round_trip_us"].as_u64().map_or_else(|| "not measured yet".into(), |us| format!("{us} µs"));
        println!(
            "DPRP round trip {round_trip}; stayed awake for new flows: {} looks, {} µs",
            awake["looks"], awake["us"]
        );
    }
    println!("counters:");
    if let Some(c) = v["counters"].as_object() {
        for (k, n) in c {
            println!("  {k:<24} {n}");
        }
    }
    ExitCode::SUCCESS
}
