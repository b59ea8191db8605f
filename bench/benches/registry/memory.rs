//! Memory under load: the server's peak RSS while 16 clients upload generated archives and 16
//! download a stored one at the same time.

use std::time::Instant;

use futures::StreamExt;

use crate::data::{self, MIB};
use crate::{Backend, Bench, Report, mb_per_s};

/// Streams a generated archive (never on disk) as an upload body.
fn generated_archive(package: &str, version: &str, payload: u64, seed: u64) -> reqwest::Body {
    let (sender, mut receiver) =
        tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let package = package.to_owned();
    let version = version.to_owned();
    std::thread::spawn(move || {
        let writer = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(sender));
        let _ = data::write_archive(writer, &package, &version, payload, seed);
    });
    reqwest::Body::wrap_stream(futures::stream::poll_fn(move |context| {
        receiver.poll_recv(context)
    }))
}

struct ChannelWriter(tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buffer)))
            .map_err(std::io::Error::other)?;
        Ok(buffer.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub async fn memory(bench: &Bench, backend: Backend, report: &mut Report, sizes: &[u64]) {
    let section = format!("{backend:?}").to_lowercase();
    for size in sizes {
        let label = format!("memory-{section}-{}", size / MIB);
        let env = bench.server_env(backend, &label).await;
        let server = bench.start(&env, &label).await;
        let key = bench.register(&server, "bench").await;
        let download_path = "/v1/packages/@bench/shared/1.0.0/x86_64-linux";
        let response = bench
            .client
            .put(format!("{}{download_path}", server.base))
            .bearer_auth(&key)
            .body(generated_archive("@bench/shared", "1.0.0", *size, 1))
            .send()
            .await
            .expect("upload");
        assert_eq!(response.status().as_u16(), 201);
        let baseline = server.process.peak_rss();
        let mut tasks = Vec::new();
        for client in 0..16u64 {
            let http = bench.client.clone();
            let base = server.base.clone();
            let key = key.clone();
            let size = *size;
            tasks.push(tokio::spawn(async move {
                let package = format!("@bench/up-{client}");
                let response = http
                    .put(format!("{base}/v1/packages/{package}/1.0.0/x86_64-linux"))
                    .bearer_auth(key)
                    .body(generated_archive(&package, "1.0.0", size, 100 + client))
                    .send()
                    .await
                    .expect("upload");
                assert_eq!(response.status().as_u16(), 201);
            }));
            let http = bench.client.clone();
            let url = format!("{}{download_path}", server.base);
            tasks.push(tokio::spawn(async move {
                let response = http.get(url).send().await.expect("download");
                let mut stream = response.bytes_stream();
                while let Some(piece) = stream.next().await {
                    piece.expect("body");
                }
            }));
        }
        let started = Instant::now();
        for task in tasks {
            task.await.expect("client");
        }
        let seconds = started.elapsed().as_secs_f64();
        let peak = server.process.peak_rss();
        report.add(
            &section,
            format!("peak RSS, 16 uploads + 16 downloads of {} MiB", size / MIB),
            format!(
                "{:.1} MiB (idle {:.1} MiB; {:.0} MB/s aggregate)",
                peak as f64 / MIB as f64,
                baseline as f64 / MIB as f64,
                mb_per_s(32 * size, seconds)
            ),
        );
    }
}
