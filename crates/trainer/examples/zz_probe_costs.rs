use std::time::Instant;
use glassbox_trainer::{TrainConfig, data, tensor::TensorBatch, train::{Trainer, depth_loss}};
use tch::Device;
fn main() {
    tch::set_num_threads(2);
    let t = Instant::now();
    for i in 0..20 { tch::manual_seed(i); }
    println!("manual_seed: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 20.0);
    let config = TrainConfig::preset("default").unwrap();
    let d = data::open(&config).unwrap();
    let mut trainer = Trainer::new(&config, Device::Cpu).unwrap();
    let batch = TensorBatch::new(&d.train.train_batches(0).next().unwrap().unwrap(), Device::Cpu);
    for round in 0..3 {
        let t = Instant::now();
        let disp = trainer.model.disparity_t(&batch.rgb, true).unwrap();
        let f = t.elapsed();
        let t = Instant::now();
        let loss = depth_loss(&trainer.config, &disp, &batch).unwrap();
        let l = t.elapsed();
        let t = Instant::now();
        loss.backward();
        let b = t.elapsed();
        let t = Instant::now();
        trainer.optimizer.step(1.0).unwrap();
        trainer.optimizer.zero_grad();
        let s = t.elapsed();
        println!("round {round}: forward {:.1} loss {:.1} backward {:.1} step {:.1} ms", f.as_secs_f64()*1e3, l.as_secs_f64()*1e3, b.as_secs_f64()*1e3, s.as_secs_f64()*1e3);
    }
    let mut batches = d.train.train_batches(0);
    for k in 0..100 {
        let t = Instant::now();
        trainer.train_step(&mut batches, "x").unwrap();
        if k % 10 == 0 { println!("train_step {k}: {:.1} ms", t.elapsed().as_secs_f64()*1e3); }
    }
}
