//! The MiDaS loss against an independent plain-Rust transcription of its definition
//! (median / mean-absolute-deviation alignment, 20% trim, batch-based reduction, four-scale
//! gradient matching over valid neighbour pairs) on a masked two-image batch.

mod common;

use common::{field, mask, scalar, values};
use glassbox_losses::{MidasLoss, SCALE_EPS};

const B: usize = 2;
const H: usize = 9;
const W: usize = 7;

/// `(x - lower median) / mean |x - lower median|` over the valid entries.
fn normalise(x: &[f64], valid: &[bool]) -> Vec<f64> {
    let mut v: Vec<f64> = x
        .iter()
        .zip(valid)
        .filter(|(_, ok)| **ok)
        .map(|(x, _)| *x)
        .collect();
    v.sort_by(f64::total_cmp);
    let median = v[(v.len() - 1) / 2];
    let scale = (v.iter().map(|x| (x - median).abs()).sum::<f64>() / v.len() as f64).max(SCALE_EPS);
    x.iter()
        .zip(valid)
        .map(|(x, ok)| if *ok { (x - median) / scale } else { 0.0 })
        .collect()
}

/// (trimmed term, gradient term) for one batch, transcribed from `docs/losses.md`.
fn reference(pred: &[f64], target: &[f64], valid: &[bool], trim: f64, scales: usize) -> (f64, f64) {
    let n = H * W;
    let mut residual = vec![0.0; B * n];
    let (mut trimmed, mut pixels) = (0.0, 0usize);
    for b in 0..B {
        let range = b * n..(b + 1) * n;
        let ok = &valid[range.clone()];
        let m = ok.iter().filter(|v| **v).count();
        if m == 0 {
            continue;
        }
        let p = normalise(&pred[range.clone()], ok);
        let t = normalise(&target[range.clone()], ok);
        let mut abs = Vec::new();
        for i in 0..n {
            residual[b * n + i] = p[i] - t[i];
            if ok[i] {
                abs.push((p[i] - t[i]).abs());
            }
        }
        abs.sort_by(f64::total_cmp);
        let kept = ((1.0 - trim) * m as f64 + 1e-9).floor() as usize;
        trimmed += abs[..kept].iter().sum::<f64>();
        pixels += m;
    }
    let at = |b: usize, y: usize, x: usize| b * n + y * W + x;
    let mut gradient = 0.0;
    for k in 0..scales {
        let step = 1 << k;
        let (mut sum, mut count) = (0.0, 0usize);
        for b in 0..B {
            for y in (0..H).step_by(step) {
                for x in (0..W).step_by(step) {
                    if !valid[at(b, y, x)] {
                        continue;
                    }
                    count += 1;
                    let r = residual[at(b, y, x)];
                    if x + step < W && valid[at(b, y, x + step)] {
                        sum += (residual[at(b, y, x + step)] - r).abs();
                    }
                    if y + step < H && valid[at(b, y + step, x)] {
                        sum += (residual[at(b, y + step, x)] - r).abs();
                    }
                }
            }
        }
        if count > 0 {
            gradient += sum / count as f64;
        }
    }
    (trimmed / (2 * pixels) as f64, gradient)
}

#[test]
fn midas_loss_matches_a_plain_transcription_of_its_definition() {
    let shape = [B as i64, H as i64, W as i64];
    let loss = MidasLoss::default();
    for seed in [1u64, 2, 3] {
        let pred = field(seed, &shape, 0.1, 4.0);
        let target = field(seed + 100, &shape, 0.1, 4.0);
        let valid = mask(seed + 200, &shape, 0.75);
        let ok: Vec<bool> = values(&valid.to_kind(tch::Kind::Double))
            .iter()
            .map(|v| *v == 1.0)
            .collect();
        let (ssi, gradient) = reference(
            &values(&pred),
            &values(&target),
            &ok,
            loss.trim,
            loss.scales,
        );
        let terms = loss.terms(&pred, &target, &valid).unwrap();
        assert!(
            (scalar(&terms.ssi) - ssi).abs() < 1e-12,
            "seed {seed}: ssi {} vs {ssi}",
            scalar(&terms.ssi)
        );
        assert!(
            (scalar(&terms.gradient) - gradient).abs() < 1e-12,
            "seed {seed}: gradient {} vs {gradient}",
            scalar(&terms.gradient)
        );
        assert!((scalar(&terms.total) - (ssi + loss.alpha * gradient)).abs() < 1e-12);
    }
}
