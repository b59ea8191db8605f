//! The `niso-server` binary: parses the command line, sets up logging and tracing
//! (`telemetry`) and hands over to `cli`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tune_malloc();
    // Two rustls crypto providers are compiled in (aws-smithy and sqlx); pick one explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let telemetry = match niso_server::telemetry::Telemetry::init("niso-server") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("niso-server: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = niso_server::cli::run(niso_server::cli::Cli::parse()).await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("niso-server: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// glibc malloc, tuned for a server that moves many ~256 KiB chunk buffers between threads:
/// its default of 8 arenas per core kept freed buffers resident in every arena a blocking thread
/// had touched, and its adaptive mmap threshold (raised to 19 MiB by the first argon2 hash) moved
/// even large buffers into those arenas. Two arenas and a fixed 1 MiB threshold (with the
/// chunker's fixed buffer) took peak RSS under the memory benchmark from 254 MiB to the figure
/// in README "Performance". A 16 MiB trim threshold keeps freed chunk buffers for reuse: at the
/// default 128 KiB every download chunk was a fresh sbrk, page-faulted and zeroed page by page,
/// which cost a fifth of a download's CPU (perf) and about 1 GB/s of throughput; peak RSS is the
/// high-water mark, which keeping freed pages does not raise. Done in code, not with MALLOC_* variables, so every way of starting
/// the server gets it.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(parameter: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        const M_ARENA_MAX: i32 = -8;
        // SAFETY: mallopt takes the allocator's own locks and only changes its parameters; it
        // is safe to call while other threads allocate.
        unsafe {
            mallopt(M_ARENA_MAX, 2);
            mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
            mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
        }
    }
}
