//! Vectors, the pinhole camera and analytic ray-primitive intersections of the synthetic renderer.
//! Rays are not normalised: a camera ray has direction `R (u', v', 1)` in camera coordinates, so
//! the ray parameter `t` of a hit *is* its z-depth along the optical axis (see `docs/data.md`),
//! and the Euclidean distance is `t * |(u', v', 1)|`.

use std::ops::{Add, Mul, Neg, Sub};

/// A 3-vector in world (x right, y up, z forward at zero yaw) or camera coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Vec3 {
    /// First component.
    pub x: f32,
    /// Second component.
    pub y: f32,
    /// Third component.
    pub z: f32,
}

impl Vec3 {
    /// Builds a vector from its components.
    pub const fn new(x: f32, y: f32, z: f32) -> Self {
        Vec3 { x, y, z }
    }
    /// Dot product.
    pub fn dot(self, o: Vec3) -> f32 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }
    /// Euclidean length.
    pub fn length(self) -> f32 {
        self.dot(self).sqrt()
    }
    /// Component-wise product (colour modulation).
    pub fn hadamard(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x * o.x, self.y * o.y, self.z * o.z)
    }
}

impl Add for Vec3 {
    type Output = Vec3;
    fn add(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}
impl Sub for Vec3 {
    type Output = Vec3;
    fn sub(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x - o.x, self.y - o.y, self.z - o.z)
    }
}
impl Mul<f32> for Vec3 {
    type Output = Vec3;
    fn mul(self, s: f32) -> Vec3 {
        Vec3::new(self.x * s, self.y * s, self.z * s)
    }
}
impl Neg for Vec3 {
    type Output = Vec3;
    fn neg(self) -> Vec3 {
        Vec3::new(-self.x, -self.y, -self.z)
    }
}

/// A pinhole camera: intrinsics in pixels (OpenCV convention: x right, y down, z forward) and a
/// camera-to-world pose.
#[derive(Debug, Clone, PartialEq)]
pub struct Camera {
    /// Focal length along x, pixels.
    pub fx: f32,
    /// Focal length along y, pixels.
    pub fy: f32,
    /// Principal point x, pixels.
    pub cx: f32,
    /// Principal point y, pixels.
    pub cy: f32,
    /// Camera centre in world coordinates.
    pub position: Vec3,
    /// World directions of the camera's x (right), y (down) and z (forward) axes.
    pub axes: [Vec3; 3],
}

impl Camera {
    /// A camera at `position` with yaw (left-right, about world y), pitch (positive looks down)
    /// and roll, all in radians, horizontal field of view `hfov` and square pixels.
    pub fn look(
        position: Vec3,
        yaw: f32,
        pitch: f32,
        roll: f32,
        hfov: f32,
        width: usize,
        height: usize,
    ) -> Camera {
        let f = width as f32 / (2.0 * (hfov / 2.0).tan());
        let (sy, cy) = yaw.sin_cos();
        let (sp, cp) = pitch.sin_cos();
        let (sr, cr) = roll.sin_cos();
        // Start from the level camera (right = +x, down = -y, forward = +z), roll about forward,
        // then pitch about right, then yaw about world up.
        let roll_axes = |v: Vec3| Vec3::new(cr * v.x - sr * v.y, sr * v.x + cr * v.y, v.z);
        let pitch_axes = |v: Vec3| Vec3::new(v.x, cp * v.y - sp * v.z, sp * v.y + cp * v.z);
        let yaw_axes = |v: Vec3| Vec3::new(cy * v.x + sy * v.z, v.y, -sy * v.x + cy * v.z);
        let rotate = |v: Vec3| yaw_axes(pitch_axes(roll_axes(v)));
        let axes = [
            rotate(Vec3::new(1.0, 0.0, 0.0)),
            rotate(Vec3::new(0.0, -1.0, 0.0)),
            rotate(Vec3::new(0.0, 0.0, 1.0)),
        ];
        Camera {
            fx: f,
            fy: f,
            cx: width as f32 / 2.0,
            cy: height as f32 / 2.0,
            position,
            axes,
        }
    }

    /// Camera-frame direction through pixel position (u, v) (pixel centres at +0.5), with z = 1.
    pub fn camera_dir(&self, u: f32, v: f32) -> Vec3 {
        Vec3::new((u - self.cx) / self.fx, (v - self.cy) / self.fy, 1.0)
    }

    /// World direction of the ray through (u, v); its component along the optical axis is 1.
    pub fn ray_dir(&self, u: f32, v: f32) -> Vec3 {
        let d = self.camera_dir(u, v);
        self.axes[0] * d.x + self.axes[1] * d.y + self.axes[2] * d.z
    }

    /// World point to camera coordinates (its `z` is the z-depth).
    pub fn to_camera(&self, p: Vec3) -> Vec3 {
        let r = p - self.position;
        Vec3::new(
            r.dot(self.axes[0]),
            r.dot(self.axes[1]),
            r.dot(self.axes[2]),
        )
    }
}

/// A ray-surface intersection: ray parameter, outward normal and metric surface coordinates.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    /// Ray parameter (z-depth for camera rays).
    pub t: f32,
    /// Unit surface normal (not yet flipped towards the viewer).
    pub normal: Vec3,
    /// Surface coordinates in metres, for procedural textures.
    pub uv: (f32, f32),
}

/// The analytic primitives scenes are made of.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// The inside of an axis-aligned box: floor, walls and ceiling of a room.
    Room {
        /// Minimum corner.
        min: Vec3,
        /// Maximum corner.
        max: Vec3,
    },
    /// The horizontal plane `y = height`, seen from above (outdoor ground).
    Ground {
        /// Height of the plane.
        height: f32,
    },
    /// A box with half extents `half`, rotated by `yaw` about the vertical through `center`.
    Cuboid {
        /// Centre.
        center: Vec3,
        /// Half extents along the box's own axes.
        half: Vec3,
        /// Rotation about the vertical axis, radians.
        yaw: f32,
    },
    /// A sphere.
    Sphere {
        /// Centre.
        center: Vec3,
        /// Radius.
        radius: f32,
    },
    /// A vertical capped cylinder standing on `base`.
    Cylinder {
        /// Centre of the bottom cap.
        base: Vec3,
        /// Radius.
        radius: f32,
        /// Height.
        height: f32,
    },
}

impl Shape {
    /// Nearest intersection with parameter in (`t_min`, `t_max`), if any.
    pub fn intersect(&self, o: Vec3, d: Vec3, t_min: f32, t_max: f32) -> Option<Hit> {
        let prepared = self.prepare();
        let t = prepared.hit_t(o, d, t_min, t_max)?;
        Some(prepared.surface(o, d, t))
    }

    /// Precomputes what every ray test needs (rotations, bounding spheres), once per render.
    pub(crate) fn prepare(&self) -> Prepared {
        match *self {
            Shape::Room { min, max } => Prepared::Room { min, max },
            Shape::Ground { height } => Prepared::Ground { height },
            Shape::Cuboid { center, half, yaw } => {
                let (sin, cos) = yaw.sin_cos();
                Prepared::Cuboid {
                    center,
                    half,
                    sin,
                    cos,
                    bound2: half.dot(half),
                }
            }
            Shape::Sphere { center, radius } => Prepared::Sphere { center, radius },
            Shape::Cylinder {
                base,
                radius,
                height,
            } => Prepared::Cylinder {
                base,
                radius,
                height,
                bound_center: base + Vec3::new(0.0, height / 2.0, 0.0),
                bound2: radius * radius + height * height / 4.0,
            },
        }
    }
}

/// A [`Shape`] with its per-render constants; ray tests return only `t`, and the surface
/// (normal, texture coordinates, which needs trigonometry) is computed once, for the nearest hit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Prepared {
    Room {
        min: Vec3,
        max: Vec3,
    },
    Ground {
        height: f32,
    },
    Cuboid {
        center: Vec3,
        half: Vec3,
        sin: f32,
        cos: f32,
        bound2: f32,
    },
    Sphere {
        center: Vec3,
        radius: f32,
    },
    Cylinder {
        base: Vec3,
        radius: f32,
        height: f32,
        bound_center: Vec3,
        bound2: f32,
    },
}

/// Whether the ray can come within the bounding sphere (centre, radius squared) before `t_max`.
#[inline]
fn may_hit_sphere(o: Vec3, d: Vec3, center: Vec3, r2: f32, t_max: f32) -> bool {
    let oc = center - o;
    let dd = d.dot(d);
    let tca = oc.dot(d);
    let oc2 = oc.dot(oc);
    if tca < 0.0 && oc2 > r2 {
        return false;
    }
    if oc2 - tca * tca / dd > r2 {
        return false;
    }
    // Nearest possible entry is at least (|oc| - r) / |d| along the ray.
    let near = oc2.sqrt() - r2.sqrt();
    near <= 0.0 || near * near <= t_max * t_max * dd
}

impl Prepared {
    /// Parameter of the nearest intersection in (`t_min`, `t_max`).
    #[inline]
    pub(crate) fn hit_t(&self, o: Vec3, d: Vec3, t_min: f32, t_max: f32) -> Option<f32> {
        let t = match *self {
            Prepared::Room { min, max } => {
                // From inside a convex box the ray leaves through the face of smallest exit.
                let exit = |o: f32, d: f32, lo: f32, hi: f32| {
                    if d > 0.0 {
                        (hi - o) / d
                    } else if d < 0.0 {
                        (lo - o) / d
                    } else {
                        f32::INFINITY
                    }
                };
                exit(o.x, d.x, min.x, max.x)
                    .min(exit(o.y, d.y, min.y, max.y))
                    .min(exit(o.z, d.z, min.z, max.z))
            }
            Prepared::Ground { height } => {
                if d.y.abs() < 1e-12 {
                    return None;
                }
                (height - o.y) / d.y
            }
            Prepared::Cuboid {
                center,
                half,
                sin,
                cos,
                bound2,
            } => {
                if !may_hit_sphere(o, d, center, bound2, t_max) {
                    return None;
                }
                let lo = to_local(o - center, sin, cos);
                let ld = to_local(d, sin, cos);
                let mut t0 = t_min;
                let mut t1 = t_max;
                let mut entered = false;
                for (oo, dd, hh) in [
                    (lo.x, ld.x, half.x),
                    (lo.y, ld.y, half.y),
                    (lo.z, ld.z, half.z),
                ] {
                    if dd.abs() < 1e-12 {
                        if oo.abs() > hh {
                            return None;
                        }
                        continue;
                    }
                    let inv = 1.0 / dd;
                    let (ta, tb) = ((-hh - oo) * inv, (hh - oo) * inv);
                    let (ta, tb) = if ta > tb { (tb, ta) } else { (ta, tb) };
                    if ta > t0 {
                        t0 = ta;
                        entered = true;
                    }
                    t1 = t1.min(tb);
                    if t0 > t1 {
                        return None;
                    }
                }
                // A ray starting inside a box does not see it: boxes are solid, seen from outside.
                if !entered {
                    return None;
                }
                t0
            }
            Prepared::Sphere { center, radius } => {
                let oc = o - center;
                let a = d.dot(d);
                let b = oc.dot(d);
                let c = oc.dot(oc) - radius * radius;
                let disc = b * b - a * c;
                if disc < 0.0 {
                    return None;
                }
                let sq = disc.sqrt();
                let t0 = (-b - sq) / a;
                if t0 > t_min && t0 < t_max {
                    t0
                } else {
                    (-b + sq) / a
                }
            }
            Prepared::Cylinder {
                base,
                radius,
                height,
                bound_center,
                bound2,
            } => {
                if !may_hit_sphere(o, d, bound_center, bound2, t_max) {
                    return None;
                }
                cylinder_t(o, d, base, radius, height, t_min, t_max)?
            }
        };
        (t > t_min && t < t_max).then_some(t)
    }

    /// Normal and texture coordinates at parameter `t` of a ray known to hit the shape there.
    pub(crate) fn surface(&self, o: Vec3, d: Vec3, t: f32) -> Hit {
        let p = o + d * t;
        let (normal, uv) = match *self {
            Prepared::Room { min, max } => {
                // The face is the one the hit point lies on (smallest distance to a bound).
                let gaps = [
                    ((p.x - min.x).abs().min((max.x - p.x).abs()), 0),
                    ((p.y - min.y).abs().min((max.y - p.y).abs()), 1),
                    ((p.z - min.z).abs().min((max.z - p.z).abs()), 2),
                ];
                let axis = gaps
                    .iter()
                    .min_by(|a, b| a.0.total_cmp(&b.0))
                    .map_or(1, |g| g.1);
                box_face(axis, p, d)
            }
            Prepared::Ground { .. } => (Vec3::new(0.0, 1.0, 0.0), (p.x, p.z)),
            Prepared::Cuboid {
                center,
                half,
                sin,
                cos,
                ..
            } => {
                let lp = to_local(p - center, sin, cos);
                let ld = to_local(d, sin, cos);
                let rel = [
                    lp.x.abs() / half.x,
                    lp.y.abs() / half.y,
                    lp.z.abs() / half.z,
                ];
                let axis = if rel[0] >= rel[1] && rel[0] >= rel[2] {
                    0
                } else if rel[1] >= rel[2] {
                    1
                } else {
                    2
                };
                let (ln, uv) = box_face(axis, lp, ld);
                // Box frame back to world: rotate by +yaw.
                (
                    Vec3::new(cos * ln.x + sin * ln.z, ln.y, -sin * ln.x + cos * ln.z),
                    uv,
                )
            }
            Prepared::Sphere { center, radius } => {
                let n = (p - center) * (1.0 / radius);
                (
                    n,
                    (
                        n.z.atan2(n.x) * radius,
                        n.y.clamp(-1.0, 1.0).asin() * radius,
                    ),
                )
            }
            Prepared::Cylinder { base, radius, .. } => {
                let (px, pz) = (p.x - base.x, p.z - base.z);
                let y = p.y - base.y;
                if px * px + pz * pz < radius * radius * (1.0 - 1e-3) {
                    let ny = if d.y > 0.0 { -1.0 } else { 1.0 };
                    (Vec3::new(0.0, ny, 0.0), (px, pz))
                } else {
                    (
                        Vec3::new(px / radius, 0.0, pz / radius),
                        (pz.atan2(px) * radius, y),
                    )
                }
            }
        };
        Hit { t, normal, uv }
    }
}

/// Normal and texture coordinates on the face of an axis-aligned box perpendicular to `axis`
/// (0 = x, 1 = y, 2 = z) at point `p`, for a ray along `d`: the normal faces the ray, and the
/// coordinates are the two in-face axes in metres (so textures keep their metric scale).
#[inline]
fn box_face(axis: usize, p: Vec3, d: Vec3) -> (Vec3, (f32, f32)) {
    match axis {
        0 => (Vec3::new(-d.x.signum(), 0.0, 0.0), (p.z, p.y)),
        1 => (Vec3::new(0.0, -d.y.signum(), 0.0), (p.x, p.z)),
        _ => (Vec3::new(0.0, 0.0, -d.z.signum()), (p.x, p.y)),
    }
}

/// World to box frame: rotation by -yaw about the vertical.
#[inline]
fn to_local(v: Vec3, sin: f32, cos: f32) -> Vec3 {
    Vec3::new(cos * v.x - sin * v.z, v.y, sin * v.x + cos * v.z)
}

fn cylinder_t(
    o: Vec3,
    d: Vec3,
    base: Vec3,
    radius: f32,
    height: f32,
    t_min: f32,
    t_max: f32,
) -> Option<f32> {
    let ox = o.x - base.x;
    let oz = o.z - base.z;
    let mut best: Option<f32> = None;
    let a = d.x * d.x + d.z * d.z;
    if a > 1e-12 {
        let b = ox * d.x + oz * d.z;
        let c = ox * ox + oz * oz - radius * radius;
        let disc = b * b - a * c;
        if disc >= 0.0 {
            let sq = disc.sqrt();
            for t in [(-b - sq) / a, (-b + sq) / a] {
                if t > t_min && t < t_max && (0.0..=height).contains(&(o.y + d.y * t - base.y)) {
                    best = Some(t);
                    break;
                }
            }
        }
    }
    if d.y.abs() > 1e-12 {
        for cap_y in [base.y, base.y + height] {
            let t = (cap_y - o.y) / d.y;
            if t > t_min && t < t_max && best.is_none_or(|b| t < b) {
                let (px, pz) = (ox + d.x * t, oz + d.z * t);
                if px * px + pz * pz <= radius * radius {
                    best = Some(t);
                }
            }
        }
    }
    best
}

/// Offset that moves shadow-ray origins off the surface they start on.
pub(crate) const SHADOW_EPS: f32 = 1e-3;

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    #[test]
    fn level_camera_ray_through_the_principal_point_is_the_forward_axis() {
        let cam = Camera::look(Vec3::default(), 0.0, 0.0, 0.0, 1.2, 64, 48);
        let d = cam.ray_dir(cam.cx, cam.cy);
        assert_abs_diff_eq!(d.z, 1.0, epsilon = 1e-6);
        assert_abs_diff_eq!(d.x, 0.0, epsilon = 1e-6);
        // Pixels below the centre look down (world y decreases).
        assert!(cam.ray_dir(cam.cx, cam.cy + 10.0).y < 0.0);
    }

    #[test]
    fn camera_coordinates_invert_the_ray_direction() {
        let cam = Camera::look(Vec3::new(1.0, 2.0, 3.0), 0.3, 0.2, -0.05, 1.1, 64, 48);
        let p = cam.position + cam.ray_dir(10.5, 30.5) * 4.0;
        let pc = cam.to_camera(p);
        assert_abs_diff_eq!(pc.z, 4.0, epsilon = 1e-4);
        assert_abs_diff_eq!(pc.x * cam.fx / pc.z + cam.cx, 10.5, epsilon = 1e-3);
        assert_abs_diff_eq!(pc.y * cam.fy / pc.z + cam.cy, 30.5, epsilon = 1e-3);
    }

    #[test]
    fn sphere_hit_lies_on_the_sphere_and_faces_the_ray() {
        let s = Shape::Sphere {
            center: Vec3::new(0.0, 0.0, 5.0),
            radius: 1.0,
        };
        let d = Vec3::new(0.1, 0.05, 1.0);
        let hit = s.intersect(Vec3::default(), d, 0.0, f32::INFINITY).unwrap();
        let p = d * hit.t;
        assert_abs_diff_eq!((p - Vec3::new(0.0, 0.0, 5.0)).length(), 1.0, epsilon = 1e-4);
        assert!(hit.normal.dot(d) < 0.0);
    }

    #[test]
    fn rotated_cuboid_is_hit_on_its_near_face() {
        let b = Shape::Cuboid {
            center: Vec3::new(0.0, 0.0, 5.0),
            half: Vec3::new(1.0, 1.0, 1.0),
            yaw: std::f32::consts::FRAC_PI_4,
        };
        let hit = b
            .intersect(
                Vec3::default(),
                Vec3::new(0.0, 0.0, 1.0),
                0.0,
                f32::INFINITY,
            )
            .unwrap();
        assert_abs_diff_eq!(hit.t, 5.0 - std::f32::consts::SQRT_2, epsilon = 1e-4);
        assert!(
            b.intersect(
                Vec3::default(),
                Vec3::new(1.0, 0.0, 0.0),
                0.0,
                f32::INFINITY
            )
            .is_none()
        );
    }

    #[test]
    fn cylinder_side_and_cap_hits() {
        let c = Shape::Cylinder {
            base: Vec3::new(0.0, 0.0, 4.0),
            radius: 0.5,
            height: 1.0,
        };
        let side = c
            .intersect(
                Vec3::new(0.0, 0.5, 0.0),
                Vec3::new(0.0, 0.0, 1.0),
                0.0,
                f32::INFINITY,
            )
            .unwrap();
        assert_abs_diff_eq!(side.t, 3.5, epsilon = 1e-5);
        let cap = c
            .intersect(
                Vec3::new(0.0, 3.0, 4.0),
                Vec3::new(0.0, -1.0, 0.0),
                0.0,
                f32::INFINITY,
            )
            .unwrap();
        assert_abs_diff_eq!(cap.t, 2.0, epsilon = 1e-5);
        assert_abs_diff_eq!(cap.normal.y, 1.0);
    }

    #[test]
    fn room_is_left_through_the_nearest_face() {
        let r = Shape::Room {
            min: Vec3::new(-2.0, 0.0, 0.0),
            max: Vec3::new(2.0, 3.0, 6.0),
        };
        let hit = r
            .intersect(
                Vec3::new(0.0, 1.0, 1.0),
                Vec3::new(0.0, -0.5, 1.0),
                0.0,
                f32::INFINITY,
            )
            .unwrap();
        assert_abs_diff_eq!(hit.t, 2.0, epsilon = 1e-5);
        assert_abs_diff_eq!(hit.normal.y, 1.0);
    }
}
