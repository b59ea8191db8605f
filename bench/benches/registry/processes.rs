//! The processes a benchmark run starts on loopback — niso-server replicas, nginx, Verdaccio,
//! wrk — each killed when its handle drops, so a run leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use niso_test_support::free_port;

/// A child process killed (and reaped) on drop.
pub struct Process {
    pub name: String,
    child: Child,
}

impl Process {
    pub fn spawn(name: &str, command: &mut Command) -> Process {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        Process {
            name: name.to_owned(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or(0)
    }
}

/// CPU time (user + system) a process has used so far, in seconds; 0 once it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces: state is
    // field 3, utime and stime are fields 14 and 15 (in clock ticks).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index - 3)
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(14) + ticks(15)) as f64 / per_second
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `url` answers 2xx.
pub async fn wait_until_up(client: &reqwest::Client, url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not come up at {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct NisoServer {
    pub process: Process,
    pub base: String,
    pub metrics: String,
}

/// A niso-server command with only `env` (NISO_DATA_DIR / database / S3 settings) and PATH.
fn niso_command(binary: &Path, env: &[(String, String)], log: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NISO_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Starts a release niso-server with `env` (NISO_DATA_DIR / database / S3 settings).
pub async fn start_niso(binary: &Path, env: &[(String, String)], log: &Path) -> NisoServer {
    let port = free_port();
    let metrics_port = free_port();
    let mut command = niso_command(binary, env, log);
    command
        .env("NISO_LISTEN", format!("127.0.0.1:{port}"))
        .env("NISO_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"));
    let process = Process::spawn("niso-server", &mut command);
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(
        &reqwest::Client::new(),
        &format!("{base}/ready"),
        "niso-server",
    )
    .await;
    NisoServer {
        process,
        base,
        metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
    }
}

/// What a one-shot niso-server command (`migrate`, `gc --once`) did.
pub struct Completed {
    pub stdout: String,
    pub seconds: f64,
    /// The process's peak resident set size (VmHWM), in bytes.
    pub peak_rss: u64,
}

/// How often [`run_niso`] samples the child's VmHWM.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(2);

/// Runs `niso-server <args>` with `env` to completion; panics unless it succeeds. Blocking.
///
/// The peak RSS is the child's VmHWM sampled until it exits, not `ru_maxrss` from
/// `wait4`/getrusage: the child is spawned with vfork semantics, and Linux carries the
/// high-water mark of the memory it shared before exec (this whole bench process, ~260 MiB)
/// into the child's `ru_maxrss`. VmHWM belongs to the exec'd image alone and only grows, so
/// sampling misses at most the last interval before exit.
pub fn run_niso(binary: &Path, env: &[(String, String)], args: &[&str], log: &Path) -> Completed {
    let mut command = niso_command(binary, env, log);
    command.args(args).stdout(Stdio::piped());
    let started = Instant::now();
    let mut process = Process::spawn("niso-server", &mut command);
    let mut peak_rss = 0;
    let status = loop {
        peak_rss = peak_rss.max(process.peak_rss());
        if let Some(status) = process.child.try_wait().expect("wait niso-server") {
            break status;
        }
        std::thread::sleep(RSS_SAMPLE_INTERVAL);
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut stdout = String::new();
    std::io::Read::read_to_string(
        &mut process.child.stdout.take().expect("stdout"),
        &mut stdout,
    )
    .expect("read stdout");
    assert!(
        status.success(),
        "niso-server {args:?} failed ({status}): {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    Completed {
        stdout,
        seconds,
        peak_rss,
    }
}

/// nginx serving `root` on loopback (Debian's package).
pub async fn start_nginx(root: &Path, work: &Path) -> (Process, String) {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .expect("nginx is not installed: apt-get install nginx");
    let port = free_port();
    let config = work.join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            "daemon off; master_process off; pid {work}/nginx.pid; error_log {work}/nginx-error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on;\n\
               client_body_temp_path {work}/nginx-body; proxy_temp_path {work}/nginx-proxy;\n\
               fastcgi_temp_path {work}/nginx-fcgi; uwsgi_temp_path {work}/nginx-uwsgi; scgi_temp_path {work}/nginx-scgi;\n\
               server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            work = work.display(),
            root = root.display()
        ),
    )
    .expect("nginx config");
    let process = Process::spawn(
        "nginx",
        Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("-p")
            .arg(work)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let base = format!("http://127.0.0.1:{port}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    (process, base)
}

/// Runs wrk against `url` and returns (requests/s, p50 ms, p99 ms).
pub fn wrk(url: &str, seconds: u64, connections: u32, method: &str) -> (f64, f64, f64) {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if method != "GET" {
        command.args(["-s", &write_method_script(method)]);
    }
    let output = command
        .arg(url)
        .output()
        .expect("wrk is not installed: apt-get install wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    parse_wrk(&text)
}

fn write_method_script(method: &str) -> String {
    let path = std::env::temp_dir().join(format!("niso-bench-{method}.lua"));
    std::fs::write(&path, format!("wrk.method = \"{method}\"\n")).expect("wrk script");
    path.display().to_string()
}

fn parse_duration_ms(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * factor
}

pub fn parse_wrk(text: &str) -> (f64, f64, f64) {
    let mut requests = f64::NAN;
    let (mut p50, mut p99) = (f64::NAN, f64::NAN);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Requests/sec:", value] => requests = value.parse().unwrap_or(f64::NAN),
            ["50%", value] => p50 = parse_duration_ms(value),
            ["99%", value] => p99 = parse_duration_ms(value),
            _ => {}
        }
    }
    if text.contains("Non-2xx") {
        eprintln!("warning: wrk saw non-2xx responses:\n{text}");
    }
    (requests, p50, p99)
}
