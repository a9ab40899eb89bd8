//! Procedural textures in metric surface coordinates, so that their apparent frequency grows with
//! distance: the texture-gradient cue of monocular depth. Value noise (lattice hash, smoothstep
//! interpolation) modulates a handful of patterns (tiles, planks, stripes, checker, facades).

use super::geometry::Vec3;

/// A reproducible hash of a lattice point to [0, 1).
fn hash(x: i32, y: i32, seed: u32) -> f32 {
    let mut h = (x as u32).wrapping_mul(0x8da6_b343)
        ^ (y as u32).wrapping_mul(0xd816_3841)
        ^ seed.wrapping_mul(0xcb1a_b31f);
    h ^= h >> 13;
    h = h.wrapping_mul(0x5bd1_e995);
    h ^= h >> 15;
    (h & 0x00ff_ffff) as f32 / 16_777_216.0
}

/// Smooth value noise in [0, 1) at (u, v), one lattice cell per unit.
pub fn value_noise(u: f32, v: f32, seed: u32) -> f32 {
    let (fu, fv) = (u.floor(), v.floor());
    let (iu, iv) = (fu as i32, fv as i32);
    let (su, sv) = (u - fu, v - fv);
    let (su, sv) = (su * su * (3.0 - 2.0 * su), sv * sv * (3.0 - 2.0 * sv));
    let a = hash(iu, iv, seed);
    let b = hash(iu + 1, iv, seed);
    let c = hash(iu, iv + 1, seed);
    let d = hash(iu + 1, iv + 1, seed);
    let top = a + (b - a) * su;
    let bottom = c + (d - c) * su;
    top + (bottom - top) * sv
}

/// Two octaves of value noise, in [0, 1).
pub fn fbm(u: f32, v: f32, seed: u32) -> f32 {
    0.65 * value_noise(u, v, seed)
        + 0.35 * value_noise(u * 2.7 + 17.0, v * 2.7 - 5.0, seed ^ 0x9e37)
}

/// The geometric layout of a texture.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// Base colour with noise only.
    Plain,
    /// Square tiles of side `size` metres, alternate tiles shaded, dark grout lines.
    Tiles {
        /// Tile side, metres.
        size: f32,
    },
    /// Floor planks `width` metres wide and four times as long, staggered.
    Planks {
        /// Plank width, metres.
        width: f32,
    },
    /// Vertical stripes of period `period` metres (wallpaper).
    Stripes {
        /// Stripe period, metres.
        period: f32,
    },
    /// Checkerboard of `size`-metre squares.
    Checker {
        /// Square side, metres.
        size: f32,
    },
    /// A building facade: windows of the secondary colour on a grid of `cell` metres.
    Facade {
        /// Window grid cell (horizontal, vertical), metres.
        cell: (f32, f32),
    },
}

/// A base colour, a secondary colour, a pattern and a noise amplitude.
#[derive(Debug, Clone, PartialEq)]
pub struct Texture {
    /// Main albedo (linear RGB in [0, 1]).
    pub base: Vec3,
    /// Second albedo used by the pattern (alternate tiles, stripes, windows).
    pub secondary: Vec3,
    /// Layout.
    pub pattern: Pattern,
    /// Relative brightness variation of the noise (0 = none).
    pub noise: f32,
    /// Noise frequency, cycles per metre.
    pub noise_freq: f32,
    /// Seed of the noise lattice.
    pub seed: u32,
}

impl Texture {
    /// A uniformly coloured surface with light noise.
    pub fn plain(base: Vec3, seed: u32) -> Texture {
        Texture {
            base,
            secondary: base,
            pattern: Pattern::Plain,
            noise: 0.15,
            noise_freq: 4.0,
            seed,
        }
    }

    /// Albedo at surface coordinates `uv` (metres).
    pub fn albedo(&self, (u, v): (f32, f32)) -> Vec3 {
        let colour = match self.pattern {
            Pattern::Plain => self.base,
            Pattern::Tiles { size } => {
                let (gu, gv) = (u / size, v / size);
                let (fu, fv) = (gu - gu.floor(), gv - gv.floor());
                let grout = 0.04;
                if fu < grout || fv < grout {
                    self.base * 0.45
                } else if (gu.floor() as i64 + gv.floor() as i64) % 2 == 0 {
                    self.base
                } else {
                    self.secondary
                }
            }
            Pattern::Planks { width } => {
                let row = (v / width).floor();
                let along = u / (4.0 * width) + 0.37 * row;
                let seam = (v / width - row) < 0.05 || (along - along.floor()) < 0.01;
                let shade = 0.8 + 0.4 * hash(row as i32, along.floor() as i32, self.seed);
                if seam {
                    self.base * 0.5
                } else {
                    self.base.hadamard(Vec3::new(shade, shade, shade))
                }
            }
            Pattern::Stripes { period } => {
                if (u / period - (u / period).floor()) < 0.5 {
                    self.base
                } else {
                    self.secondary
                }
            }
            Pattern::Checker { size } => {
                if ((u / size).floor() as i64 + (v / size).floor() as i64) % 2 == 0 {
                    self.base
                } else {
                    self.secondary
                }
            }
            Pattern::Facade { cell: (cw, ch) } => {
                let (fu, fv) = (u / cw - (u / cw).floor(), v / ch - (v / ch).floor());
                let lit = hash((u / cw).floor() as i32, (v / ch).floor() as i32, self.seed);
                if (0.2..0.8).contains(&fu) && (0.25..0.8).contains(&fv) && v > 0.8 {
                    self.secondary * (0.6 + 0.8 * lit)
                } else {
                    self.base
                }
            }
        };
        let n = 1.0
            + self.noise * (2.0 * fbm(u * self.noise_freq, v * self.noise_freq, self.seed) - 1.0);
        colour * n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_noise_is_continuous_and_bounded() {
        for i in 0..200 {
            let u = i as f32 * 0.037;
            let a = value_noise(u, 1.3, 7);
            let b = value_noise(u + 1e-3, 1.3, 7);
            assert!((0.0..1.0).contains(&a));
            assert!((a - b).abs() < 0.01, "jump at {u}: {a} -> {b}");
        }
    }

    #[test]
    fn tiles_have_dark_grout_lines() {
        let t = Texture {
            base: Vec3::new(0.8, 0.8, 0.8),
            secondary: Vec3::new(0.6, 0.6, 0.6),
            pattern: Pattern::Tiles { size: 0.5 },
            noise: 0.0,
            noise_freq: 1.0,
            seed: 1,
        };
        assert!(t.albedo((0.005, 0.25)).x < 0.5);
        assert!(t.albedo((0.25, 0.25)).x > 0.7);
    }
}
