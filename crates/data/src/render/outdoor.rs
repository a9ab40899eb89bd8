//! KITTI-like streets: a road along the world z axis with lane marks, sidewalks, rows of
//! buildings, cars (two boxes each), poles and trees, a sun with shadows, sky and haze, seen from
//! a car-mounted camera about 1.65 m above the road.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::geometry::{Camera, Shape, Vec3};
use super::texture::{Pattern, Texture};
use super::{Light, Object, Scene, Surface, classes, random_colour};

fn grey(v: f32) -> Vec3 {
    Vec3::new(v, v, v)
}

/// A random street scene; depth range 1-80 m, sky invalid.
pub(super) fn scene(rng: &mut ChaCha8Rng, width: usize, height: usize) -> (Scene, Camera) {
    let hw = rng.random_range(3.5f32..6.0);
    let sidewalk_w = rng.random_range(2.0f32..4.0);
    let asphalt = Texture {
        base: grey(rng.random_range(0.25..0.4)),
        secondary: grey(0.3),
        pattern: Pattern::Plain,
        noise: 0.25,
        noise_freq: 3.0,
        seed: rng.random(),
    };
    let sidewalk = Texture {
        base: grey(rng.random_range(0.5..0.7)),
        secondary: grey(0.45),
        pattern: Pattern::Tiles {
            size: rng.random_range(0.4..0.8),
        },
        noise: 0.1,
        noise_freq: 4.0,
        seed: rng.random(),
    };
    let mut objects = vec![Object {
        shape: Shape::Ground { height: 0.0 },
        surface: Surface::Street {
            road_half_width: hw,
            asphalt,
            sidewalk,
            dash: (3.0, 6.0),
        },
    }];

    for side in [-1.0f32, 1.0] {
        let mut z = rng.random_range(-8.0f32..2.0);
        while z < 110.0 {
            let length = rng.random_range(8.0f32..22.0);
            let depth = rng.random_range(8.0f32..14.0);
            let tall = rng.random_range(5.0f32..22.0);
            let front = hw + sidewalk_w + rng.random_range(0.0..3.0);
            let base = Vec3::new(
                rng.random_range(0.35..0.8),
                rng.random_range(0.3..0.7),
                rng.random_range(0.3..0.65),
            );
            let texture = Texture {
                base,
                secondary: Vec3::new(0.2, 0.25, 0.32),
                pattern: Pattern::Facade {
                    cell: (rng.random_range(2.0..3.5), rng.random_range(2.8..3.5)),
                },
                noise: 0.1,
                noise_freq: 1.5,
                seed: rng.random(),
            };
            let center = Vec3::new(side * (front + depth / 2.0), tall / 2.0, z + length / 2.0);
            objects.push(Object::solid(
                classes::BUILDING,
                texture,
                Shape::Cuboid {
                    center,
                    half: Vec3::new(depth / 2.0, tall / 2.0, length / 2.0),
                    yaw: 0.0,
                },
            ));
            z += length + rng.random_range(0.0..6.0);
        }
        let mut pz = rng.random_range(3.0f32..15.0);
        while pz < 70.0 {
            let pole = Texture::plain(grey(rng.random_range(0.3..0.6)), rng.random());
            objects.push(Object::solid(
                classes::POLE,
                pole,
                Shape::Cylinder {
                    base: Vec3::new(side * (hw + 0.5), 0.0, pz),
                    radius: rng.random_range(0.08..0.15),
                    height: rng.random_range(5.0..8.0),
                },
            ));
            pz += rng.random_range(15.0..30.0);
        }
        for _ in 0..rng.random_range(0..3) {
            let tz = rng.random_range(5.0f32..60.0);
            let tx = side * (hw + sidewalk_w * 0.6);
            let trunk_h = rng.random_range(1.8f32..3.0);
            let crown = rng.random_range(1.2f32..2.4);
            let bark = Texture::plain(Vec3::new(0.35, 0.25, 0.15), rng.random());
            let leaves = Texture {
                base: Vec3::new(0.2, rng.random_range(0.35..0.55), 0.15),
                secondary: Vec3::new(0.15, 0.3, 0.1),
                pattern: Pattern::Plain,
                noise: 0.45,
                noise_freq: 5.0,
                seed: rng.random(),
            };
            objects.push(Object::solid(
                classes::VEGETATION,
                bark,
                Shape::Cylinder {
                    base: Vec3::new(tx, 0.0, tz),
                    radius: 0.18,
                    height: trunk_h,
                },
            ));
            objects.push(Object::solid(
                classes::VEGETATION,
                leaves,
                Shape::Sphere {
                    center: Vec3::new(tx, trunk_h + crown * 0.8, tz),
                    radius: crown,
                },
            ));
        }
    }

    let cam_x = rng.random_range(-hw * 0.6..hw * 0.2);
    for _ in 0..rng.random_range(1..=6) {
        let lane = [-hw * 0.5, hw * 0.5, -(hw - 1.1), hw - 1.1][rng.random_range(0..4)];
        let cz = rng.random_range(6.0f32..60.0);
        if (lane - cam_x).abs() < 1.2 && cz < 9.0 {
            continue;
        }
        let paint = Texture::plain(random_colour(rng, 0.05, 0.9), rng.random());
        let glass = Texture::plain(Vec3::new(0.12, 0.14, 0.18), rng.random());
        let yaw = rng.random_range(-0.08..0.08);
        let body = Vec3::new(0.85, 0.4, 2.1);
        objects.push(Object::solid(
            classes::CAR,
            paint,
            Shape::Cuboid {
                center: Vec3::new(lane, 0.2 + body.y, cz),
                half: body,
                yaw,
            },
        ));
        let cabin = Vec3::new(0.75, 0.3, 1.1);
        objects.push(Object::solid(
            classes::CAR,
            glass,
            Shape::Cuboid {
                center: Vec3::new(lane, 0.2 + 2.0 * body.y + cabin.y, cz - 0.2),
                half: cabin,
                yaw,
            },
        ));
    }

    let elevation = rng.random_range(25f32..65.0).to_radians();
    let azimuth = rng.random_range(0.0f32..std::f32::consts::TAU);
    let direction = Vec3::new(
        elevation.cos() * azimuth.cos(),
        elevation.sin(),
        elevation.cos() * azimuth.sin(),
    );
    let horizon = Vec3::new(0.78, 0.84, 0.9);
    let zenith = Vec3::new(
        rng.random_range(0.25..0.45),
        rng.random_range(0.45..0.6),
        rng.random_range(0.8..0.95),
    );
    let camera = Camera::look(
        Vec3::new(cam_x, rng.random_range(1.5..1.8), 0.0),
        rng.random_range(-0.12..0.12),
        rng.random_range(-0.03..0.06),
        rng.random_range(-0.02..0.02),
        rng.random_range(70f32..90.0).to_radians(),
        width,
        height,
    );
    let scene = Scene {
        objects,
        light: Light::Sun {
            direction,
            intensity: rng.random_range(0.8..1.0),
        },
        ambient: rng.random_range(0.3..0.4),
        sky: Some((horizon, zenith)),
        haze: Some((horizon, rng.random_range(200.0..400.0))),
        depth_range: (1.0, 80.0),
    };
    (scene, camera)
}
