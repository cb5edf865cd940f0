//! The measurement behind the RPC choice: the same master state and the same bincode
//! payloads behind (a) our framed protocol and (b) tonic gRPC (HTTP/2), `exists` round
//! trips over loopback with 1 and 8 concurrent clients, each with its own connection.
//!
//! ```text
//! cargo run --release -p mooncake-master --features grpc-compare --example master_rpc_vs_grpc -- [--secs 3]
//! ```

use bytes::{Buf, BufMut};

use mooncake_master::server::Shared;
use mooncake_master::MasterConfig;
use mooncake_master::MasterServer;
use mooncake_store_protocol::MasterClient;
use mooncake_store_protocol::{
    ClientId, ErrorCode, ReplicateConfig, Request, Response, SegmentDesc,
};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, StdError};
use tonic::Status;

type Reply = Result<Response, ErrorCode>;

/// bincode payloads inside gRPC messages (the same bytes our protocol carries).
struct BinCodec<E, D>(std::marker::PhantomData<(E, D)>);
impl<E, D> Default for BinCodec<E, D> {
    fn default() -> Self {
        BinCodec(std::marker::PhantomData)
    }
}
struct BinEnc<E>(std::marker::PhantomData<E>);
struct BinDec<D>(std::marker::PhantomData<D>);

impl<E: serde::Serialize + Send + 'static, D: serde::de::DeserializeOwned + Send + 'static> Codec
    for BinCodec<E, D>
{
    type Encode = E;
    type Decode = D;
    type Encoder = BinEnc<E>;
    type Decoder = BinDec<D>;
    fn encoder(&mut self) -> BinEnc<E> {
        BinEnc(std::marker::PhantomData)
    }
    fn decoder(&mut self) -> BinDec<D> {
        BinDec(std::marker::PhantomData)
    }
}

impl<E: serde::Serialize> Encoder for BinEnc<E> {
    type Item = E;
    type Error = Status;
    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bincode::serialize_into(dst.writer(), &item).map_err(|e| Status::internal(e.to_string()))
    }
}

impl<D: serde::de::DeserializeOwned> Decoder for BinDec<D> {
    type Item = D;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        let v = bincode::deserialize_from(src.reader())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Some(v))
    }
}

/// A one-method gRPC service, `/mooncake.Master/Call`, written out by hand (what
/// tonic-build would generate) so no protoc is needed.
#[derive(Clone)]
struct GrpcMaster(Arc<Shared>);

impl tonic::server::NamedService for GrpcMaster {
    const NAME: &'static str = "mooncake.Master";
}

struct CallSvc(Arc<Shared>);
impl tonic::server::UnaryService<Request> for CallSvc {
    type Response = Reply;
    type Future = BoxFuture<tonic::Response<Reply>, Status>;
    fn call(&mut self, req: tonic::Request<Request>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let r = shared.state.lock().handle(req.into_inner());
            Ok(tonic::Response::new(r))
        })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for GrpcMaster
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::BoxBody>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(BinCodec::<Reply, Request>::default());
            Ok(grpc.unary(CallSvc(shared), req).await)
        })
    }
}

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

fn summarize(name: &str, clients: usize, el: f64, mut lat: Vec<u64>) {
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "| {name} | {clients} | {:.0} | {:.1} | {:.1} |",
        lat.len() as f64 / el,
        p(0.5),
        p(0.99)
    );
}

async fn bench_framed(addr: String, clients: usize, secs: u64) {
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let c = MasterClient::connect(&addr).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < stop {
                let t0 = Instant::now();
                assert!(c.exists("bench-key").await.unwrap());
                lat.push(t0.elapsed().as_nanos() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    summarize("framed (ours)", clients, start.elapsed().as_secs_f64(), all);
}

async fn bench_grpc(addr: String, clients: usize, secs: u64) {
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut g = tonic::client::Grpc::new(ch);
            let path = http::uri::PathAndQuery::from_static("/mooncake.Master/Call");
            let mut lat = Vec::new();
            while Instant::now() < stop {
                let t0 = Instant::now();
                g.ready().await.unwrap();
                let req = tonic::Request::new(Request::Exists {
                    key: "bench-key".into(),
                });
                let r: tonic::Response<Reply> = g
                    .unary(req, path.clone(), BinCodec::<Request, Reply>::default())
                    .await
                    .unwrap();
                assert_eq!(r.into_inner(), Ok(Response::Exists(true)));
                lat.push(t0.elapsed().as_nanos() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    summarize("tonic gRPC", clients, start.elapsed().as_secs_f64(), all);
}

#[tokio::main]
async fn main() {
    let secs: u64 = arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(3);
    let srv = MasterServer::start(MasterConfig {
        rpc_address: "127.0.0.1".into(),
        rpc_port: 0,
        metrics_host: "127.0.0.1".into(),
        metrics_port: 0,
        // The bench's segment owner never heartbeats; keep it alive for the run.
        client_ttl: 3600,
        ..Default::default()
    })
    .await
    .unwrap();
    let addr = srv.rpc_addr().to_string();
    let c = MasterClient::connect(&addr).await.unwrap();
    let seg = SegmentDesc {
        name: "bench-seg".into(),
        base_addr: 1 << 40,
        size: 1 << 30,
        protocol: "tcp".into(),
        location: String::new(),
    };
    c.mount_segment(ClientId(1), &seg).await.unwrap();
    c.put_start("bench-key", 4096, &ReplicateConfig::default())
        .await
        .unwrap();
    c.put_end("bench-key").await.unwrap();

    let grpc_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let grpc_addr: std::net::SocketAddr = format!("127.0.0.1:{grpc_port}").parse().unwrap();
    let svc = GrpcMaster(srv.shared().clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve(grpc_addr)
            .await
            .unwrap();
    });
    // Wait until the gRPC listener accepts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(grpc_addr).await.is_err() {
        assert!(Instant::now() < deadline, "gRPC server did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    println!("| transport | clients | exists ops/s | p50 µs | p99 µs |");
    println!("|---|---|---|---|---|");
    for clients in [1, 8] {
        bench_framed(addr.clone(), clients, secs).await;
        bench_grpc(grpc_addr.to_string(), clients, secs).await;
    }
}
