//! The synthetic RGB-D-S renderer, the project's embedded default dataset (see `docs/data.md`):
//! random indoor (NYU-like) and outdoor (KITTI-like) scenes of analytic primitives, ray-cast
//! through a pinhole camera with Lambertian shading, hard shadows, procedural textures and (outdoor)
//! aerial haze, so the monocular cues are real: perspective, occlusion, texture gradient, shading.
//! Depth is z-depth along the optical axis; every sample is a pure function of (dataset seed,
//! index), so `get(i)` is random access and the result does not depend on thread scheduling.

pub mod geometry;
mod indoor;
mod outdoor;
pub mod texture;

use ndarray::{Array2, Array3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::sample::{Dataset, Sample, derive_seed, normalize_u8, quantize_unit};
use geometry::{Camera, Hit, Prepared, SHADOW_EPS, Shape, Vec3};
use texture::Texture;

/// The semantic classes of the synthetic scenes: one list for both families, so a model trained on
/// a mix sees consistent ids. Ids start at 0 (as ADE20K's once reduced, and as cross-entropy wants);
/// pixels that belong to no class are [`IGNORE_LABEL`](crate::IGNORE_LABEL).
pub mod classes {
    /// Indoor floor.
    pub const FLOOR: u8 = 0;
    /// Indoor wall.
    pub const WALL: u8 = 1;
    /// Indoor ceiling.
    pub const CEILING: u8 = 2;
    /// Box (indoor furniture-like cuboid).
    pub const BOX: u8 = 3;
    /// Sphere.
    pub const SPHERE: u8 = 4;
    /// Cylinder.
    pub const CYLINDER: u8 = 5;
    /// Road surface.
    pub const ROAD: u8 = 6;
    /// Lane marking on the road.
    pub const LANE: u8 = 7;
    /// Sidewalk / verge beside the road.
    pub const SIDEWALK: u8 = 8;
    /// Building.
    pub const BUILDING: u8 = 9;
    /// Car.
    pub const CAR: u8 = 10;
    /// Pole.
    pub const POLE: u8 = 11;
    /// Tree (trunk and crown).
    pub const VEGETATION: u8 = 12;
    /// Sky (depth invalid).
    pub const SKY: u8 = 13;
    /// Void, a ray that hits nothing in a scene without sky: the ignore label, not a class.
    pub const VOID: u8 = crate::sample::IGNORE_LABEL;
    /// Number of real classes (the segmentation head's output channels); void is not counted.
    pub const COUNT: usize = 14;
    /// Class names, indexed by id.
    pub const NAMES: [&str; COUNT] = [
        "floor",
        "wall",
        "ceiling",
        "box",
        "sphere",
        "cylinder",
        "road",
        "lane",
        "sidewalk",
        "building",
        "car",
        "pole",
        "vegetation",
        "sky",
    ];
}

/// How a surface turns a hit into a class and an albedo.
#[derive(Debug, Clone, PartialEq)]
pub enum Surface {
    /// One class, one texture.
    Solid {
        /// Semantic class.
        class: u8,
        /// Albedo texture.
        texture: Texture,
    },
    /// The inside of a room: the class follows the face (floor, wall or ceiling).
    Room {
        /// Floor texture.
        floor: Texture,
        /// Wall texture.
        wall: Texture,
        /// Ceiling texture.
        ceiling: Texture,
    },
    /// A street along the world z axis: road with a dashed centre line and solid edge lines,
    /// sidewalk beyond `road_half_width`.
    Street {
        /// Half the road width, metres.
        road_half_width: f32,
        /// Road texture.
        asphalt: Texture,
        /// Sidewalk texture.
        sidewalk: Texture,
        /// Dash length and gap of the centre line, metres.
        dash: (f32, f32),
    },
}

/// Half-width of a painted lane line, metres.
const LINE_HALF_WIDTH: f32 = 0.075;

impl Surface {
    fn shade(&self, p: Vec3, hit: &Hit) -> (u8, Vec3) {
        match self {
            Surface::Solid { class, texture } => (*class, texture.albedo(hit.uv)),
            Surface::Room {
                floor,
                wall,
                ceiling,
            } => {
                if hit.normal.y > 0.5 {
                    (classes::FLOOR, floor.albedo(hit.uv))
                } else if hit.normal.y < -0.5 {
                    (classes::CEILING, ceiling.albedo(hit.uv))
                } else {
                    (classes::WALL, wall.albedo(hit.uv))
                }
            }
            Surface::Street {
                road_half_width,
                asphalt,
                sidewalk,
                dash,
            } => {
                let ax = p.x.abs();
                if ax >= *road_half_width {
                    return (classes::SIDEWALK, sidewalk.albedo(hit.uv));
                }
                let period = dash.0 + dash.1;
                let centre = ax < LINE_HALF_WIDTH && p.z.rem_euclid(period) < dash.0;
                let edge = (ax - (road_half_width - 0.3)).abs() < LINE_HALF_WIDTH;
                if centre || edge {
                    let paint =
                        0.85 + 0.1 * texture::value_noise(p.x * 9.0, p.z * 9.0, asphalt.seed);
                    (classes::LANE, Vec3::new(paint, paint, paint * 0.95))
                } else {
                    (classes::ROAD, asphalt.albedo(hit.uv))
                }
            }
        }
    }
}

/// One primitive with its surface.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Geometry.
    pub shape: Shape,
    /// Appearance and class.
    pub surface: Surface,
}

impl Object {
    /// An object of one class with one texture (everything but the road, which is a
    /// [`Surface::Street`]).
    fn solid(class: u8, texture: Texture, shape: Shape) -> Object {
        Object {
            shape,
            surface: Surface::Solid { class, texture },
        }
    }

    /// Rooms and ground planes bound the scene and cannot come between a surface and the light.
    fn casts_shadow(&self) -> bool {
        !matches!(self.shape, Shape::Room { .. } | Shape::Ground { .. })
    }
}

/// A random colour with each channel uniform in `lo..hi`, drawn in the order r, g, b (scene
/// generation relies on this order for reproducible samples).
fn random_colour(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> Vec3 {
    Vec3::new(
        rng.random_range(lo..hi),
        rng.random_range(lo..hi),
        rng.random_range(lo..hi),
    )
}

/// The light source; shading is Lambertian plus a constant ambient term.
#[derive(Debug, Clone, PartialEq)]
pub enum Light {
    /// A point light (indoor ceiling lamp) with inverse-square-like falloff.
    Point {
        /// Position.
        position: Vec3,
        /// Intensity at 1 m.
        intensity: f32,
    },
    /// A directional light (the sun).
    Sun {
        /// Unit vector pointing towards the sun.
        direction: Vec3,
        /// Intensity.
        intensity: f32,
    },
}

/// A complete scene: objects, light and the atmosphere.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// Everything a ray can hit.
    pub objects: Vec<Object>,
    /// The light.
    pub light: Light,
    /// Ambient light level (fraction of albedo visible in full shadow).
    pub ambient: f32,
    /// Sky colours (horizon, zenith) for rays that hit nothing; `None` leaves them black and void.
    pub sky: Option<(Vec3, Vec3)>,
    /// Aerial perspective: haze colour and the distance (metres) at which 63% of it is mixed in.
    pub haze: Option<(Vec3, f32)>,
    /// Depth the simulated sensor can measure, metres; outside it the mask is false.
    pub depth_range: (f32, f32),
}

/// What one camera ray sees.
struct PixelResult {
    rgb: [u8; 3],
    depth: f32,
    valid: bool,
    class: u8,
}

/// A scene ready for ray casting: shapes prepared once, shadow casters listed apart.
struct Prepped<'a> {
    scene: &'a Scene,
    shapes: Vec<(Prepared, &'a Object)>,
    casters: Vec<Prepared>,
}

impl<'a> Prepped<'a> {
    fn new(scene: &'a Scene) -> Self {
        let shapes: Vec<(Prepared, &Object)> = scene
            .objects
            .iter()
            .map(|o| (o.shape.prepare(), o))
            .collect();
        let casters = shapes
            .iter()
            .filter(|(_, o)| o.casts_shadow())
            .map(|(p, _)| *p)
            .collect();
        Prepped {
            scene,
            shapes,
            casters,
        }
    }

    fn nearest(&self, o: Vec3, d: Vec3) -> Option<(Hit, &'a Object)> {
        let mut best: Option<(f32, &Prepared, &'a Object)> = None;
        for (shape, obj) in &self.shapes {
            let t_max = best.map_or(f32::INFINITY, |(t, _, _)| t);
            if let Some(t) = shape.hit_t(o, d, 1e-4, t_max) {
                best = Some((t, shape, *obj));
            }
        }
        best.map(|(t, shape, obj)| (shape.surface(o, d, t), obj))
    }

    fn occluded(&self, o: Vec3, d: Vec3, t_max: f32) -> bool {
        self.casters
            .iter()
            .any(|shape| shape.hit_t(o, d, SHADOW_EPS, t_max).is_some())
    }

    fn trace(&self, camera: &Camera, u: f32, v: f32) -> PixelResult {
        let scene = self.scene;
        let d = camera.ray_dir(u, v);
        let o = camera.position;
        let Some((hit, obj)) = self.nearest(o, d) else {
            let (rgb, class) = match scene.sky {
                Some((horizon, zenith)) => {
                    let up = (d.y / d.length()).clamp(0.0, 1.0).sqrt();
                    (horizon * (1.0 - up) + zenith * up, classes::SKY)
                }
                None => (Vec3::default(), classes::VOID),
            };
            return PixelResult {
                rgb: quantize(rgb),
                depth: 0.0,
                valid: false,
                class,
            };
        };
        let p = o + d * hit.t;
        let n = if hit.normal.dot(d) > 0.0 {
            -hit.normal
        } else {
            hit.normal
        };
        let (class, albedo) = obj.surface.shade(p, &hit);
        let start = p + n * SHADOW_EPS;
        let diffuse = match scene.light {
            Light::Point {
                position,
                intensity,
            } => {
                let l = position - start;
                let dist2 = l.dot(l);
                let lambert = n.dot(l) / dist2.sqrt();
                if lambert <= 0.0 || self.occluded(start, l, 1.0) {
                    0.0
                } else {
                    lambert * intensity / (1.0 + 0.08 * dist2)
                }
            }
            Light::Sun {
                direction,
                intensity,
            } => {
                let lambert = n.dot(direction);
                if lambert <= 0.0 || self.occluded(start, direction, f32::INFINITY) {
                    0.0
                } else {
                    lambert * intensity
                }
            }
        };
        let mut colour = albedo * (scene.ambient + diffuse);
        if let Some((haze, distance)) = scene.haze {
            let f = 1.0 - (-(hit.t * camera.camera_dir(u, v).length()) / distance).exp();
            colour = colour * (1.0 - f) + haze * f;
        }
        let (lo, hi) = scene.depth_range;
        PixelResult {
            rgb: quantize(colour),
            depth: hit.t,
            valid: hit.t >= lo && hit.t <= hi,
            class,
        }
    }
}

fn quantize(c: Vec3) -> [u8; 3] {
    [quantize_unit(c.x), quantize_unit(c.y), quantize_unit(c.z)]
}

/// Sparse LiDAR-like ground truth (KITTI's Velodyne HDL-64E): depth kept only where one of
/// `beams` scan lines, evenly spaced in elevation, crosses a pixel, with random dropout. The
/// scanner is modelled at the camera centre and level with the camera.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LidarConfig {
    /// Number of scan lines.
    pub beams: usize,
    /// Lowest and highest beam elevation, degrees (HDL-64E: -24.8 to +2.0).
    pub elevation_deg: (f32, f32),
    /// Probability that a crossing pixel returns a point.
    pub keep: f32,
}

impl Default for LidarConfig {
    fn default() -> Self {
        LidarConfig {
            beams: 64,
            elevation_deg: (-24.8, 2.0),
            keep: 0.9,
        }
    }
}

/// Ray casts `scene` through `camera` at `width` x `height`, rows in parallel. `noise_seed` drives
/// the 8-bit sensor noise (about one grey level), so the result is a pure function of the inputs.
pub fn render(
    scene: &Scene,
    camera: &Camera,
    width: usize,
    height: usize,
    name: &str,
    noise_seed: u64,
) -> Sample {
    let prepped = Prepped::new(scene);
    let rows: Vec<Vec<PixelResult>> = (0..height)
        .into_par_iter()
        .map(|y| {
            (0..width)
                .map(|x| prepped.trace(camera, x as f32 + 0.5, y as f32 + 0.5))
                .collect()
        })
        .collect();
    let mut rgb = Array3::<f32>::zeros((3, height, width));
    let mut depth = Array2::<f32>::zeros((height, width));
    let mut mask = Array2::from_elem((height, width), false);
    let mut labels = Array2::<u8>::from_elem((height, width), classes::VOID);
    let seed = (noise_seed ^ (noise_seed >> 32)) as u32;
    for (y, row) in rows.iter().enumerate() {
        for (x, px) in row.iter().enumerate() {
            for c in 0..3 {
                let jitter =
                    texture::value_noise(x as f32 * 1.9 + c as f32 * 101.0, y as f32 * 1.9, seed);
                let v = (px.rgb[c] as f32 + 2.0 * (jitter - 0.5))
                    .round()
                    .clamp(0.0, 255.0);
                rgb[[c, y, x]] = normalize_u8(v as u8, c);
            }
            if px.valid {
                depth[[y, x]] = px.depth;
                mask[[y, x]] = true;
            }
            labels[[y, x]] = px.class;
        }
    }
    Sample {
        rgb,
        depth,
        mask,
        labels: Some(labels),
        name: name.to_string(),
    }
}

/// Keeps depth only on simulated LiDAR scan lines (see [`LidarConfig`]).
pub fn apply_lidar(sample: &mut Sample, camera: &Camera, lidar: &LidarConfig, seed: u64) {
    let (h, w) = sample.mask.dim();
    let mut hit = Array2::from_elem((h, w), false);
    let (lo, hi) = lidar.elevation_deg;
    let beams = lidar.beams.max(1);
    for x in 0..w {
        let xc = (x as f32 + 0.5 - camera.cx) / camera.fx;
        let radial = (xc * xc + 1.0).sqrt();
        for b in 0..beams {
            let e = if beams == 1 {
                lo
            } else {
                lo + (hi - lo) * b as f32 / (beams - 1) as f32
            };
            let yc = -e.to_radians().tan() * radial;
            let v = (camera.cy + camera.fy * yc - 0.5).round();
            if v >= 0.0 && (v as usize) < h {
                let draw = derive_seed(seed, x as u64, b as u64);
                if (draw >> 40) as f32 / (1u64 << 24) as f32 <= lidar.keep {
                    hit[[v as usize, x]] = true;
                }
            }
        }
    }
    ndarray::Zip::from(&mut sample.mask)
        .and(&mut sample.depth)
        .and(&hit)
        .for_each(|m, d, &k| {
            *m &= k;
            if !*m {
                *d = 0.0;
            }
        });
}

/// Which family of scenes to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SceneKind {
    /// NYU-like rooms, depth 0.5-10 m.
    Indoor,
    /// KITTI-like streets, depth 1-80 m, sky invalid.
    Outdoor,
    /// Both, alternating: even samples are the indoor dataset's, odd ones the outdoor
    /// dataset's (same seed), so pretraining sees rooms and streets in every batch.
    Mixed,
}

impl SceneKind {
    /// The family of sample `index`: `Mixed` alternates, starting indoors.
    pub fn at(self, index: usize) -> SceneKind {
        match self {
            SceneKind::Mixed if index.is_multiple_of(2) => SceneKind::Indoor,
            SceneKind::Mixed => SceneKind::Outdoor,
            kind => kind,
        }
    }
}

impl std::str::FromStr for SceneKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "indoor" => Ok(SceneKind::Indoor),
            "outdoor" => Ok(SceneKind::Outdoor),
            "mixed" => Ok(SceneKind::Mixed),
            other => Err(DataError::Config(format!(
                "scene kind {other:?}, expected indoor, outdoor or mixed"
            ))),
        }
    }
}

/// Everything that defines a synthetic dataset; two datasets with equal configs are identical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticConfig {
    /// Scene family.
    pub kind: SceneKind,
    /// Image width, pixels.
    pub width: usize,
    /// Image height, pixels.
    pub height: usize,
    /// Number of samples.
    pub len: usize,
    /// Dataset seed; sample `i` uses a seed derived from it and `i`.
    pub seed: u64,
    /// Sparse LiDAR-like ground truth instead of dense depth (outdoor KITTI style).
    pub lidar: Option<LidarConfig>,
}

impl SyntheticConfig {
    /// Dense indoor scenes.
    pub fn indoor(width: usize, height: usize, len: usize, seed: u64) -> Self {
        SyntheticConfig {
            kind: SceneKind::Indoor,
            width,
            height,
            len,
            seed,
            lidar: None,
        }
    }
    /// Dense outdoor scenes.
    pub fn outdoor(width: usize, height: usize, len: usize, seed: u64) -> Self {
        SyntheticConfig {
            kind: SceneKind::Outdoor,
            width,
            height,
            len,
            seed,
            lidar: None,
        }
    }
}

/// The synthetic dataset: renders sample `i` on demand.
#[derive(Debug, Clone)]
pub struct SyntheticDataset {
    config: SyntheticConfig,
}

impl SyntheticDataset {
    /// Checks the configuration (non-zero size) and builds the dataset; nothing is rendered yet.
    pub fn new(config: SyntheticConfig) -> Result<Self> {
        if config.width < 8 || config.height < 8 {
            return Err(DataError::Config(format!(
                "synthetic image size {}x{} is too small (at least 8x8)",
                config.width, config.height
            )));
        }
        Ok(SyntheticDataset { config })
    }

    /// The configuration.
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    fn sample_seed(&self, index: usize) -> u64 {
        derive_seed(
            self.config.seed,
            index as u64,
            self.config.kind.at(index) as u64,
        )
    }

    /// The scene and camera of sample `index` (for tests and for writing intrinsics).
    pub fn scene(&self, index: usize) -> (Scene, Camera) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.sample_seed(index));
        let (w, h) = (self.config.width, self.config.height);
        match self.config.kind.at(index) {
            SceneKind::Outdoor => outdoor::scene(&mut rng, w, h),
            _ => indoor::scene(&mut rng, w, h),
        }
    }

    /// Name of sample `index`, used in messages and file names.
    pub fn name(&self, index: usize) -> String {
        format!("synthetic-{:?}-{index:05}", self.config.kind.at(index)).to_lowercase()
    }
}

impl Dataset for SyntheticDataset {
    fn len(&self) -> usize {
        self.config.len
    }

    fn get(&self, index: usize) -> Result<Sample> {
        if index >= self.config.len {
            return Err(DataError::IndexOutOfRange {
                index,
                len: self.config.len,
            });
        }
        let (scene, camera) = self.scene(index);
        let seed = self.sample_seed(index);
        let mut sample = render(
            &scene,
            &camera,
            self.config.width,
            self.config.height,
            &self.name(index),
            seed,
        );
        if let Some(lidar) = &self.config.lidar {
            apply_lidar(&mut sample, &camera, lidar, seed);
        }
        Ok(sample)
    }
}
