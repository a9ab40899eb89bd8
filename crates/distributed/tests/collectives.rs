//! Real process groups over 127.0.0.1: each test starts its ranks as child processes of this
//! test binary (the `rank_*` functions below run only when `GLASSBOX_TEST_RANK_BODY` names them)
//! and checks what they print.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use glassbox_distributed::{Backend, DistError, GradientBuckets, Launch, ProcessGroup, free_port};
use tch::{Kind, Tensor};

const BODY: &str = "GLASSBOX_TEST_RANK_BODY";

/// Runs test function `body` as `world` ranks and returns their outputs in rank order.
fn ranks(body: &str, world: usize, extra: &[(&str, &str)]) -> Vec<Output> {
    let port = free_port("127.0.0.1").unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            let mut command = Command::new(&exe);
            command
                .args([body, "--exact", "--nocapture", "--test-threads", "1"])
                .env(BODY, body)
                .envs(Launch::local(rank, world, port).env())
                .envs(extra.iter().copied())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            command.spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// The launch of a rank body, or `None` in an ordinary test run (the body then does nothing).
fn as_rank(body: &str) -> Option<(Launch, ProcessGroup)> {
    if std::env::var(BODY).ok()?.as_str() != body {
        return None;
    }
    tch::set_num_threads(1);
    let launch = Launch::from_env().unwrap().unwrap();
    let group = ProcessGroup::new(&launch, Backend::Gloo, Duration::from_secs(20)).unwrap();
    Some((launch, group))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The lines (from their tag on: the harness may print on the same line first) tagged `tag`.
fn tagged<'a>(text: &'a str, tag: &'a str) -> impl Iterator<Item = String> + 'a {
    text.lines()
        .filter_map(move |l| l.find(tag).map(|i| l[i..].to_string()))
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.reshape([-1])).unwrap()
}

#[test]
fn rank_collectives() {
    let Some((launch, group)) = as_rank("rank_collectives") else {
        return;
    };
    let r = launch.rank as f32;
    // Sum and mean: rank r holds r + 1 everywhere.
    let sum = Tensor::full([3], f64::from(r + 1.0), (Kind::Float, tch::Device::Cpu));
    group.all_reduce_sum(&[&sum]).unwrap();
    let mean = Tensor::full([2, 2], f64::from(r + 1.0), (Kind::Float, tch::Device::Cpu));
    group.all_reduce_mean(&[&mean]).unwrap();
    // Broadcast: every rank ends with rank 1's random weights.
    tch::manual_seed(launch.rank as i64);
    let weights = Tensor::randn([5], (Kind::Float, tch::Device::Cpu));
    group.broadcast(&[&weights], 1).unwrap();
    // Buckets: three parameters, a cap that forces two buckets, one extra value.
    let params: Vec<Tensor> = [4i64, 3, 2]
        .iter()
        .map(|&n| Tensor::zeros([n], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true))
        .collect();
    let loss = params
        .iter()
        .map(|p| (p * f64::from(r + 1.0)).sum(Kind::Float))
        .reduce(|a, b| a + b)
        .unwrap();
    loss.backward();
    let buckets = GradientBuckets::new(&params, 5 * 4);
    let extra = buckets
        .all_reduce_mean(&group, &params, &[f64::from(r) * 10.0])
        .unwrap();
    group.barrier().unwrap();
    println!("SUM {:?}", values(&sum));
    println!("MEAN {:?}", values(&mean));
    println!("WEIGHTS {:?}", values(&weights));
    println!("BUCKETS {}", buckets.len());
    for p in &params {
        println!("GRAD {:?}", values(&p.grad()));
    }
    println!("EXTRA {extra:?}");
}

#[test]
fn sums_means_broadcasts_and_buckets_agree_across_two_ranks() {
    let outputs = ranks("rank_collectives", 2, &[]);
    for o in &outputs {
        assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    }
    let (a, b) = (stdout(&outputs[0]), stdout(&outputs[1]));
    let line = |text: &str, tag: &str| -> String {
        tagged(text, tag)
            .next()
            .unwrap_or_else(|| panic!("no {tag} in {text}"))
    };
    assert_eq!(line(&a, "SUM"), "SUM [3.0, 3.0, 3.0]");
    assert_eq!(line(&a, "MEAN"), "MEAN [1.5, 1.5, 1.5, 1.5]");
    assert_eq!(line(&b, "MEAN"), line(&a, "MEAN"));
    // Rank 1's own draw differs from rank 0's; after the broadcast both hold it.
    assert_eq!(line(&a, "WEIGHTS"), line(&b, "WEIGHTS"));
    tch::manual_seed(1);
    let expected = values(&Tensor::randn([5], (Kind::Float, tch::Device::Cpu)));
    assert_eq!(line(&a, "WEIGHTS"), format!("WEIGHTS {expected:?}"));
    assert_eq!(line(&a, "BUCKETS"), "BUCKETS 2");
    let grads: Vec<String> = tagged(&a, "GRAD").collect();
    assert_eq!(
        grads,
        [
            "GRAD [1.5, 1.5, 1.5, 1.5]",
            "GRAD [1.5, 1.5, 1.5]",
            "GRAD [1.5, 1.5]"
        ]
    );
    assert_eq!(line(&a, "EXTRA"), "EXTRA [5.0]");
    assert_eq!(line(&b, "EXTRA"), "EXTRA [5.0]");
}

#[test]
fn rank_dies() {
    let Some((launch, group)) = as_rank("rank_dies") else {
        return;
    };
    let t = Tensor::ones([4], (Kind::Float, tch::Device::Cpu));
    group.all_reduce_sum(&[&t]).unwrap();
    if launch.rank == 1 {
        // Gone without a word, as a killed process would be.
        std::process::abort();
    }
    let started = Instant::now();
    let err = group.all_reduce_sum(&[&t]).unwrap_err();
    println!("ERROR {err}");
    println!("SECONDS {:.1}", started.elapsed().as_secs_f64());
    assert!(matches!(err, DistError::PeerLost { .. }), "{err:?}");
}

#[test]
fn a_lost_rank_is_named_by_the_survivor_within_the_timeout() {
    let outputs = ranks("rank_dies", 2, &[]);
    assert!(!outputs[1].status.success());
    let o = &outputs[0];
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    let text = stdout(o);
    assert!(
        text.contains("rank 0: all-reduce failed because rank 1 stopped responding"),
        "{text}"
    );
    let seconds: f64 = text
        .lines()
        .find_map(|l| Some(l[l.find("SECONDS ")? + 8..].to_string()))
        .unwrap()
        .parse()
        .unwrap();
    assert!(seconds < 20.0, "{seconds} s is not within the 20 s timeout");
}

#[test]
fn a_port_in_use_is_one_clear_sentence() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let err = ProcessGroup::new(
        &Launch::local(0, 1, port),
        Backend::Gloo,
        Duration::from_secs(5),
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        format!(
            "rank 0: port {port} on 127.0.0.1 is in use; set MASTER_PORT (or --master-port) to \
             a free port"
        )
    );
}

#[test]
fn a_single_rank_group_reduces_to_itself() {
    let port = free_port("127.0.0.1").unwrap();
    let group = ProcessGroup::new(
        &Launch::local(0, 1, port),
        Backend::Gloo,
        Duration::from_secs(5),
    )
    .unwrap();
    let t = Tensor::from_slice(&[1.0f32, 2.0]);
    group.all_reduce_mean(&[&t]).unwrap();
    assert_eq!(values(&t), [1.0, 2.0]);
    let moved = t.transpose(0, 0).expand([2, 2], false);
    let err = group.all_reduce_sum(&[&moved]).unwrap_err();
    assert!(err.to_string().contains("must be contiguous"), "{err}");
}
