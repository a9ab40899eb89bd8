//! Model-level records: parallel computation over layers and heads, the JSONL line, the profile.

mod common;

use approx::assert_abs_diff_eq;
use common::{OwnedHead, random_head};
use glassbox_spectral::{
    AttentionKind, HeadInput, Indicator, Indicators, SpectralError, SpectralRecord, compute_head,
    compute_layer,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn model(kind: AttentionKind, layers: usize, heads: usize) -> Vec<Vec<OwnedHead>> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    (0..layers)
        .map(|l| {
            (0..heads)
                .map(|_| random_head(&mut rng, kind, 9, 4, 2, 1.0 + l as f32))
                .collect()
        })
        .collect()
}

fn inputs(model: &[Vec<OwnedHead>]) -> Vec<Vec<HeadInput<'_, f32>>> {
    model
        .iter()
        .map(|l| l.iter().map(OwnedHead::input).collect())
        .collect()
}

#[test]
fn record_holds_every_head_of_every_layer_in_order() {
    let owned = model(AttentionKind::Svda, 3, 2);
    let record = SpectralRecord::compute(17, &inputs(&owned)).unwrap();
    assert_eq!(record.step, 17);
    assert_eq!(record.layers.len(), 3);
    for (l, layer) in record.layers.iter().enumerate() {
        assert_eq!(layer.layer, l);
        assert_eq!(layer.heads.len(), 2);
        for (h, head) in layer.heads.iter().enumerate() {
            assert_eq!(head.head, h);
            assert_eq!(*head, compute_head(h, &owned[l][h].input()).unwrap());
        }
    }
}

#[test]
fn layer_mean_is_the_mean_over_heads() {
    let owned = model(AttentionKind::Svda, 1, 3);
    let layer = compute_layer(0, &inputs(&owned)[0]).unwrap();
    // Without a token grid there is no attention distance; every other indicator is present.
    for indicator in Indicator::ALL
        .into_iter()
        .filter(|&i| i != Indicator::AttentionDistance)
    {
        let mean = layer
            .heads
            .iter()
            .map(|h| h.indicators.get(indicator).unwrap())
            .sum::<f64>()
            / 3.0;
        assert_abs_diff_eq!(layer.mean.get(indicator).unwrap(), mean, epsilon = 1e-12);
    }
}

#[test]
fn layer_by_layer_and_whole_model_give_the_same_record() {
    let owned = model(AttentionKind::Standard, 2, 3);
    let inputs = inputs(&owned);
    let layers = inputs
        .iter()
        .enumerate()
        .map(|(l, heads)| compute_layer(l, heads).unwrap())
        .collect();
    assert_eq!(
        SpectralRecord::from_layers(5, layers),
        SpectralRecord::compute(5, &inputs).unwrap()
    );
}

#[test]
fn record_is_one_json_line_that_reads_back() {
    let owned = model(AttentionKind::Svda, 2, 2);
    let record = SpectralRecord::compute(3, &inputs(&owned)).unwrap();
    let mut sink = Vec::new();
    record.write_jsonl(&mut sink).unwrap();
    record.write_jsonl(&mut sink).unwrap();
    let text = String::from_utf8(sink).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(SpectralRecord::from_json_line(lines[1]).unwrap(), record);
    let value: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(value["layers"][1]["heads"][0]["kind"], "svda");
    assert!(value["layers"][1]["heads"][0]["spectral_entropy"].is_f64());
}

#[test]
fn standard_records_omit_sigma_fields() {
    let owned = model(AttentionKind::Standard, 1, 1);
    let line = SpectralRecord::compute(0, &inputs(&owned))
        .unwrap()
        .to_json_line()
        .unwrap();
    assert!(
        !line.contains("spectral_entropy") && !line.contains("robustness_sigma"),
        "{line}"
    );
    assert!(line.contains("\"kind\":\"standard\""), "{line}");
}

#[test]
fn depth_profile_lists_layer_means_by_depth() {
    let owned = model(AttentionKind::Standard, 4, 2);
    let record = SpectralRecord::compute(9, &inputs(&owned)).unwrap();
    let profile = record.profile();
    assert_eq!(profile.layers, vec![0, 1, 2, 3]);
    let selectivity = profile.series(Indicator::Selectivity);
    assert_eq!(selectivity.len(), 4);
    for ((layer, value), l) in selectivity.iter().zip(&record.layers) {
        assert_eq!((*layer, *value), (l.layer, l.mean.selectivity));
    }
    assert!(profile.series(Indicator::SpectralEntropy).is_empty());
}

#[test]
fn a_bad_head_is_reported_with_its_layer_and_head() {
    let mut owned = model(AttentionKind::Svda, 2, 3);
    owned[1][2].attention[[0, 0]] = f32::NAN;
    let err = SpectralRecord::compute(0, &inputs(&owned)).unwrap_err();
    assert!(
        matches!(
            err,
            SpectralError::InHead {
                layer: 1,
                head: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("attention"), "{err}");
}

#[test]
fn a_layer_without_heads_is_an_error() {
    assert!(matches!(
        compute_layer::<f32>(0, &[]),
        Err(SpectralError::Empty { .. })
    ));
    assert_eq!(Indicators::mean(&[]), None);
}
