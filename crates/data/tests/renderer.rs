//! The renderer is deterministic for a seed, random access by index, and its depth is the analytic
//! z-depth of the scene geometry (not the ray length).

use approx::assert_relative_eq;
use glassbox_data::render::geometry::{Camera, Shape, Vec3};
use glassbox_data::render::texture::Texture;
use glassbox_data::render::{LidarConfig, Light, Object, Scene, Surface, classes, render};
use glassbox_data::{Dataset, SyntheticConfig, SyntheticDataset};

#[test]
fn same_seed_same_samples_in_any_order_and_other_seed_differs() {
    let a = SyntheticDataset::new(SyntheticConfig::indoor(48, 32, 3, 7)).unwrap();
    let b = SyntheticDataset::new(SyntheticConfig::indoor(48, 32, 3, 7)).unwrap();
    let c = SyntheticDataset::new(SyntheticConfig::indoor(48, 32, 3, 8)).unwrap();
    let late_first = b.get(2).unwrap();
    assert_eq!(a.get(2).unwrap(), late_first);
    assert_eq!(a.get(0).unwrap(), b.get(0).unwrap());
    assert_ne!(a.get(0).unwrap().rgb, a.get(1).unwrap().rgb);
    assert_ne!(a.get(0).unwrap().depth, c.get(0).unwrap().depth);
    assert!(a.get(3).is_err());
}

#[test]
fn mixed_scenes_interleave_the_indoor_and_outdoor_datasets() {
    let mixed = SyntheticConfig {
        kind: glassbox_data::SceneKind::Mixed,
        ..SyntheticConfig::indoor(48, 32, 4, 5)
    };
    let mixed = SyntheticDataset::new(mixed).unwrap();
    let indoor = SyntheticDataset::new(SyntheticConfig::indoor(48, 32, 4, 5)).unwrap();
    let outdoor = SyntheticDataset::new(SyntheticConfig::outdoor(48, 32, 4, 5)).unwrap();
    assert_eq!(mixed.get(0).unwrap(), indoor.get(0).unwrap());
    assert_eq!(mixed.get(1).unwrap(), outdoor.get(1).unwrap());
    assert_eq!(mixed.get(2).unwrap(), indoor.get(2).unwrap());
    assert_eq!(mixed.name(3), "synthetic-outdoor-00003");
    assert_eq!(
        "mixed".parse::<glassbox_data::SceneKind>().unwrap(),
        glassbox_data::SceneKind::Mixed
    );
}

#[test]
fn floor_depth_equals_the_analytic_ray_plane_z_distance() {
    let ds = SyntheticDataset::new(SyntheticConfig::indoor(64, 48, 6, 3)).unwrap();
    let mut checked = 0;
    for i in 0..ds.len() {
        let sample = ds.get(i).unwrap();
        let (_, camera) = ds.scene(i);
        let labels = sample.labels.as_ref().unwrap();
        for ((y, x), &class) in labels.indexed_iter() {
            if class != classes::FLOOR || !sample.mask[[y, x]] {
                continue;
            }
            // Ray through the pixel centre, solved against the plane y = 0 independently of the
            // renderer's room code, then projected on the optical axis.
            let c = camera.camera_dir(x as f32 + 0.5, y as f32 + 0.5);
            let world = camera.axes[0] * c.x + camera.axes[1] * c.y + camera.axes[2] * c.z;
            let s = -camera.position.y / world.y;
            let hit = camera.position + world * s;
            let z = camera.to_camera(hit).z;
            assert_relative_eq!(sample.depth[[y, x]], z, max_relative = 1e-4);
            checked += 1;
        }
    }
    assert!(checked > 1000, "only {checked} floor pixels checked");
}

fn wall_scene(distance: f32) -> Scene {
    Scene {
        objects: vec![Object {
            shape: Shape::Cuboid {
                center: Vec3::new(0.0, 0.0, distance + 1.0),
                half: Vec3::new(50.0, 50.0, 1.0),
                yaw: 0.0,
            },
            surface: Surface::Solid {
                class: classes::WALL,
                texture: Texture::plain(Vec3::new(0.5, 0.5, 0.5), 1),
            },
        }],
        light: Light::Sun {
            direction: Vec3::new(0.0, 0.0, -1.0),
            intensity: 1.0,
        },
        ambient: 0.2,
        sky: None,
        haze: None,
        depth_range: (0.1, 100.0),
    }
}

#[test]
fn a_fronto_parallel_wall_has_constant_z_depth_while_the_ray_length_grows_off_axis() {
    let camera = Camera::look(Vec3::default(), 0.0, 0.0, 0.0, 90f32.to_radians(), 32, 32);
    let sample = render(&wall_scene(4.0), &camera, 32, 32, "wall", 0);
    assert!(sample.mask.iter().all(|&m| m));
    for &d in &sample.depth {
        assert_relative_eq!(d, 4.0, max_relative = 1e-5);
    }
    // At the corner pixel the Euclidean distance is depth * |(u', v', 1)|, clearly larger than 4.
    let ray_length = sample.depth[[0, 0]] * camera.camera_dir(0.5, 0.5).length();
    assert!(ray_length > 5.5, "corner ray length {ray_length}");
}

#[test]
fn shading_darkens_surfaces_turned_from_the_light_and_shadows_are_cast() {
    let ds = SyntheticDataset::new(SyntheticConfig::outdoor(96, 48, 1, 2)).unwrap();
    let s = ds.get(0).unwrap();
    let labels = s.labels.as_ref().unwrap();
    assert!(labels.iter().any(|&c| c == classes::SKY));
    for ((y, x), &c) in labels.indexed_iter() {
        if c == classes::SKY {
            assert!(
                !s.mask[[y, x]],
                "sky pixel ({y}, {x}) must have invalid depth"
            );
        }
    }
    let valid = s
        .depth
        .iter()
        .zip(&s.mask)
        .filter(|(_, m)| **m)
        .map(|(d, _)| *d);
    assert!(valid.fold(0.0, f32::max) <= 80.0);
    // Road pixels vary in brightness (texture, shadows), they are not one flat colour.
    let road: Vec<f32> = labels
        .indexed_iter()
        .filter(|(_, c)| **c == classes::ROAD)
        .map(|((y, x), _)| s.rgb[[0, y, x]])
        .collect();
    let spread = road.iter().copied().fold(f32::MIN, f32::max)
        - road.iter().copied().fold(f32::MAX, f32::min);
    assert!(spread > 0.1, "road brightness spread {spread}");
}

#[test]
fn indoor_depth_stays_within_the_sensor_range_and_lidar_makes_ground_truth_sparse() {
    let dense = SyntheticDataset::new(SyntheticConfig::indoor(64, 48, 2, 4))
        .unwrap()
        .get(1)
        .unwrap();
    for (&d, &m) in dense.depth.iter().zip(&dense.mask) {
        assert!(!m || (0.5..=10.0).contains(&d), "depth {d}");
    }
    assert!(dense.valid_fraction() > 0.9);
    let mut cfg = SyntheticConfig::outdoor(128, 64, 1, 9);
    let full = SyntheticDataset::new(cfg.clone()).unwrap().get(0).unwrap();
    cfg.lidar = Some(LidarConfig {
        beams: 16,
        ..LidarConfig::default()
    });
    let sparse = SyntheticDataset::new(cfg).unwrap().get(0).unwrap();
    assert_eq!(full.rgb, sparse.rgb);
    assert!(
        sparse.valid_fraction() < 0.5 * full.valid_fraction() && sparse.valid_fraction() > 0.02
    );
    for ((p, &m), &d) in sparse.mask.indexed_iter().zip(&sparse.depth) {
        if m {
            assert_eq!(d, full.depth[p]);
        }
    }
}
