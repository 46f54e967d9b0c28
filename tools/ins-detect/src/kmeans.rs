//! k-means with standardised features and per-cluster radii: the model of
//! the anomaly detector.
//!
//! * Standardisation: each feature is centred on its training mean and
//!   divided by `max(std, floor)` (the floor keeps a feature that never
//!   varied in training from turning any change into an infinite score).
//! * Initialisation: k-means++ with a fixed-seed generator, so the same
//!   training data gives the same model; then Lloyd iterations until the
//!   assignment stops changing or `iterations` is reached.
//! * Radius of a cluster: the `quantile` of its members' distances times
//!   `margin`, at least `min_radius`. A point's score is its distance to
//!   the nearest centre divided by that centre's radius: above 1 is an
//!   outlier.
//!
//! Invariants: a model has 1 ..= k centres (fewer when the data has fewer
//! distinct points), every radius is ≥ `min_radius` > 0, and scoring never
//! panics (NaN features score as outliers).

/// Settings of a training run.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Clusters wanted.
    pub k: usize,
    /// Most Lloyd iterations.
    pub iterations: usize,
    /// Radius quantile.
    pub quantile: f64,
    /// Radius margin.
    pub margin: f64,
    /// Smallest radius.
    pub min_radius: f64,
}

/// A trained model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    mean: Vec<f64>,
    scale: Vec<f64>,
    /// Cluster centres (standardised space).
    pub centres: Vec<Vec<f64>>,
    /// Radius per centre.
    pub radii: Vec<f64>,
    /// Members per centre at training.
    pub sizes: Vec<usize>,
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

impl Model {
    /// Trains on `data` (rows of equal length, at least one) with per
    /// feature scale floors `floors`.
    pub fn train(data: &[Vec<f64>], floors: &[f64], p: Params) -> Option<Model> {
        let dim = floors.len();
        let rows: Vec<&Vec<f64>> = data
            .iter()
            .filter(|r| r.len() == dim && r.iter().all(|x| x.is_finite()))
            .collect();
        if rows.is_empty() || p.k == 0 {
            return None;
        }
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..dim)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let scale: Vec<f64> = (0..dim)
            .map(|j| {
                let var = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
                var.sqrt().max(floors[j])
            })
            .collect();
        let z: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| (0..dim).map(|j| (r[j] - mean[j]) / scale[j]).collect())
            .collect();
        // k-means++.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut centres: Vec<Vec<f64>> = vec![z[(rng.next() % z.len() as u64) as usize].clone()];
        let mut d2: Vec<f64> = z.iter().map(|x| dist2(x, &centres[0])).collect();
        while centres.len() < p.k {
            let total: f64 = d2.iter().sum();
            if total <= 1e-12 {
                break; // every point sits on a centre already
            }
            let mut pick = rng.unit() * total;
            let mut idx = 0;
            for (i, w) in d2.iter().enumerate() {
                if pick < *w {
                    idx = i;
                    break;
                }
                pick -= w;
                idx = i;
            }
            let c = z[idx].clone();
            for (i, x) in z.iter().enumerate() {
                d2[i] = d2[i].min(dist2(x, &c));
            }
            centres.push(c);
        }
        // Lloyd.
        let mut assign = vec![usize::MAX; z.len()];
        for _ in 0..p.iterations.max(1) {
            let mut changed = false;
            for (i, x) in z.iter().enumerate() {
                let best = nearest(&centres, x).0;
                if assign[i] != best {
                    assign[i] = best;
                    changed = true;
                }
            }
            let mut sums = vec![vec![0.0; dim]; centres.len()];
            let mut counts = vec![0usize; centres.len()];
            for (i, x) in z.iter().enumerate() {
                counts[assign[i]] += 1;
                for j in 0..dim {
                    sums[assign[i]][j] += x[j];
                }
            }
            for (c, (s, &k)) in centres.iter_mut().zip(sums.iter().zip(&counts)) {
                if k > 0 {
                    for j in 0..dim {
                        c[j] = s[j] / k as f64;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        // Drop empty clusters, compute radii.
        let mut kept_c = Vec::new();
        let mut radii = Vec::new();
        let mut sizes = Vec::new();
        for (ci, c) in centres.iter().enumerate() {
            let mut ds: Vec<f64> = z
                .iter()
                .zip(&assign)
                .filter(|(_, a)| **a == ci)
                .map(|(x, _)| dist2(x, c).sqrt())
                .collect();
            if ds.is_empty() {
                continue;
            }
            let r = (quantile(&mut ds, p.quantile) * p.margin).max(p.min_radius);
            sizes.push(ds.len());
            kept_c.push(c.clone());
            radii.push(r);
        }
        Some(Model {
            mean,
            scale,
            centres: kept_c,
            radii,
            sizes,
        })
    }

    /// Standardises a raw feature vector.
    pub fn standardise(&self, x: &[f64]) -> Vec<f64> {
        x.iter()
            .zip(self.mean.iter().zip(&self.scale))
            .map(|(v, (m, s))| (v - m) / s)
            .collect()
    }

    /// Score of a raw feature vector: distance to the nearest centre over
    /// its radius (> 1: outlier), and that centre's index.
    pub fn score(&self, x: &[f64]) -> (f64, usize) {
        if x.len() != self.mean.len() || x.iter().any(|v| !v.is_finite()) {
            return (f64::INFINITY, 0);
        }
        let z = self.standardise(x);
        let mut best = (f64::INFINITY, 0);
        for (i, (c, r)) in self.centres.iter().zip(&self.radii).enumerate() {
            let s = dist2(&z, c).sqrt() / r;
            if s < best.0 {
                best = (s, i);
            }
        }
        best
    }
}

fn nearest(centres: &[Vec<f64>], x: &[f64]) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (i, c) in centres.iter().enumerate() {
        let d = dist2(x, c);
        if d < best.1 {
            best = (i, d);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: Params = Params {
        k: 3,
        iterations: 50,
        quantile: 0.99,
        margin: 1.2,
        min_radius: 0.5,
    };

    fn blobs() -> Vec<Vec<f64>> {
        let mut rng = Rng(7);
        let mut v = Vec::new();
        for (cx, cy) in [(0.0, 0.0), (10.0, 10.0), (0.0, 20.0)] {
            for _ in 0..200 {
                v.push(vec![cx + rng.unit() - 0.5, cy + rng.unit() - 0.5]);
            }
        }
        v
    }

    #[test]
    fn finds_the_blobs_and_scores_outliers() {
        let m = Model::train(&blobs(), &[0.1, 0.1], P).unwrap();
        assert_eq!(m.centres.len(), 3);
        let mut sizes = m.sizes.clone();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![200, 200, 200]);
        assert!(m.score(&[0.1, -0.2]).0 < 1.0);
        assert!(m.score(&[10.2, 9.9]).0 < 1.0);
        assert!(m.score(&[5.0, 5.0]).0 > 1.0, "between blobs");
        assert!(m.score(&[0.0, 60.0]).0 > 1.0, "far away");
        assert!(m.score(&[f64::NAN, 0.0]).0.is_infinite());
        // Deterministic.
        assert_eq!(Model::train(&blobs(), &[0.1, 0.1], P).unwrap(), m);
    }

    #[test]
    fn constant_features_use_the_floor() {
        let data = vec![vec![1.0, 5.0]; 50];
        let m = Model::train(&data, &[0.5, 0.5], P).unwrap();
        assert_eq!(m.centres.len(), 1, "one distinct point, one cluster");
        assert!(m.score(&[1.0, 5.0]).0 < 1.0);
        // 0.5 away (one floor unit) is inside the 0.5 minimum radius × 2 …
        assert!(m.score(&[1.2, 5.0]).0 < 1.0);
        assert!(m.score(&[3.0, 5.0]).0 > 1.0);
    }

    proptest! {
        #[test]
        fn training_never_panics_and_radii_are_positive(
            rows in proptest::collection::vec(proptest::collection::vec(-1e6f64..1e6, 3), 1..60),
            k in 1usize..6,
        ) {
            let m = Model::train(&rows, &[0.1, 0.1, 0.1], Params { k, ..P }).unwrap();
            prop_assert!(!m.centres.is_empty() && m.centres.len() <= k);
            prop_assert!(m.radii.iter().all(|&r| r >= P.min_radius));
            // Every training point's nearest centre is within reach of some radius scale.
            for r in &rows {
                prop_assert!(m.score(r).0.is_finite());
            }
        }
    }
}
