//! NYU-like rooms: a closed room (floor, walls, ceiling) with boxes, spheres and cylinders standing
//! on the floor, a ceiling lamp, and a hand-held camera near the back wall.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::geometry::{Camera, Shape, Vec3};
use super::texture::{Pattern, Texture};
use super::{Light, Object, Scene, Surface, classes, random_colour};

fn random_texture(rng: &mut ChaCha8Rng, base: Vec3, patterns: &[Pattern]) -> Texture {
    let pattern = patterns[rng.random_range(0..patterns.len())].clone();
    let secondary = base * rng.random_range(0.6..0.9);
    Texture {
        base,
        secondary,
        pattern,
        noise: rng.random_range(0.05..0.25),
        noise_freq: rng.random_range(2.0..8.0),
        seed: rng.random(),
    }
}

/// A random room with 3-7 objects and a camera inside it; depth range 0.5-10 m (Kinect-like).
pub(super) fn scene(rng: &mut ChaCha8Rng, width: usize, height: usize) -> (Scene, Camera) {
    let room_w = rng.random_range(3.5f32..7.0);
    let room_d = rng.random_range(4.0f32..7.5);
    let room_h = rng.random_range(2.4f32..3.2);
    let min = Vec3::new(-room_w / 2.0, 0.0, 0.0);
    let max = Vec3::new(room_w / 2.0, room_h, room_d);

    let floor_base = random_colour(rng, 0.35, 0.75);
    let floor_patterns = [
        Pattern::Tiles {
            size: rng.random_range(0.3..0.7),
        },
        Pattern::Planks {
            width: rng.random_range(0.12..0.25),
        },
        Pattern::Checker {
            size: rng.random_range(0.4..0.8),
        },
    ];
    let floor = random_texture(rng, floor_base, &floor_patterns);
    let wall_base = random_colour(rng, 0.55, 0.9);
    let wall_patterns = [
        Pattern::Plain,
        Pattern::Stripes {
            period: rng.random_range(0.15..0.5),
        },
    ];
    let wall = random_texture(rng, wall_base, &wall_patterns);
    let ceiling = Texture::plain(Vec3::new(0.9, 0.9, 0.88), rng.random());
    let mut objects = vec![Object {
        shape: Shape::Room { min, max },
        surface: Surface::Room {
            floor,
            wall,
            ceiling,
        },
    }];

    let cam_pos = Vec3::new(
        rng.random_range(-room_w / 4.0..room_w / 4.0),
        rng.random_range(1.0..1.7),
        rng.random_range(0.2..0.6),
    );
    // Footprints (x, z, radius) already used, plus the camera's, so objects do not interpenetrate.
    let mut used: Vec<(f32, f32, f32)> = vec![(cam_pos.x, cam_pos.z, 0.9)];
    let n_objects = rng.random_range(3..=7);
    let mut attempts = 0;
    while objects.len() <= n_objects && attempts < 60 {
        attempts += 1;
        let kind = rng.random_range(0..3);
        let size = rng.random_range(0.15f32..0.55);
        let x = rng.random_range(min.x + size + 0.05..max.x - size - 0.05);
        let z = rng.random_range(1.0 + size..max.z - size - 0.05);
        let radius = size * 1.5;
        if used
            .iter()
            .any(|&(ux, uz, ur)| (ux - x).hypot(uz - z) < ur + radius)
        {
            continue;
        }
        used.push((x, z, radius));
        let base = random_colour(rng, 0.15, 0.95);
        let (shape, class) = match kind {
            0 => {
                let half = Vec3::new(
                    size,
                    rng.random_range(0.15..0.6),
                    size * rng.random_range(0.6..1.0),
                );
                (
                    Shape::Cuboid {
                        center: Vec3::new(x, half.y, z),
                        half,
                        yaw: rng.random_range(0.0..std::f32::consts::PI),
                    },
                    classes::BOX,
                )
            }
            1 => (
                Shape::Sphere {
                    center: Vec3::new(x, size, z),
                    radius: size,
                },
                classes::SPHERE,
            ),
            _ => (
                Shape::Cylinder {
                    base: Vec3::new(x, 0.0, z),
                    radius: size * 0.7,
                    height: rng.random_range(0.4..1.8),
                },
                classes::CYLINDER,
            ),
        };
        let patterns = [
            Pattern::Plain,
            Pattern::Stripes {
                period: rng.random_range(0.05..0.2),
            },
            Pattern::Checker {
                size: rng.random_range(0.05..0.15),
            },
        ];
        let texture = random_texture(rng, base, &patterns);
        // Now and then a smaller box rests on top of a box: stacked furniture, more occlusion.
        let stack = match &shape {
            Shape::Cuboid { center, half, yaw } if rng.random_bool(0.3) => {
                let top = Vec3::new(half.x * 0.6, rng.random_range(0.1..0.3), half.z * 0.6);
                Some(Shape::Cuboid {
                    center: Vec3::new(center.x, center.y + half.y + top.y, center.z),
                    half: top,
                    yaw: yaw + rng.random_range(-0.5..0.5),
                })
            }
            _ => None,
        };
        objects.push(Object::solid(class, texture, shape));
        if let Some(shape) = stack {
            let top_base = random_colour(rng, 0.15, 0.95);
            let texture = random_texture(rng, top_base, &[Pattern::Plain]);
            objects.push(Object::solid(classes::BOX, texture, shape));
        }
    }

    let light = Light::Point {
        position: Vec3::new(
            rng.random_range(min.x + 0.3..max.x - 0.3),
            room_h - 0.05,
            rng.random_range(1.0..max.z - 0.3),
        ),
        intensity: rng.random_range(1.6..2.6),
    };
    let camera = Camera::look(
        cam_pos,
        rng.random_range(-0.45..0.45),
        rng.random_range(0.08..0.5),
        rng.random_range(-0.05..0.05),
        rng.random_range(55f32..75.0).to_radians(),
        width,
        height,
    );
    let scene = Scene {
        objects,
        light,
        ambient: rng.random_range(0.2..0.35),
        sky: None,
        haze: None,
        depth_range: (0.5, 10.0),
    };
    (scene, camera)
}
