// SPDX-License-Identifier: MPL-2.0
//! The fuzz targets (`src/fuzzing.rs`) in the test suite: every regression input kept in
//! `fuzz/regressions/<target>/`, every seed of `fuzz/seeds/<target>/`, and then a seeded
//! mutation of the seeds (bit flips, byte changes, insertions, deletions, splices of two
//! inputs, boundary values), a few thousand inputs per target. Deterministic: a failure here
//! repeats. The coverage-guided runs, 10^5 inputs and more per target, are
//! `scripts/fuzz.sh`.

mod common;

use common::Noise;
use gstcustomvideo::fuzzing;
use std::path::Path;

/// The files of `fuzz/<kind>/<target>/`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect()
}

/// One mutation of `input`, with `other` for splices.
fn mutate(noise: &mut Noise, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + noise.below(4) {
        let at = noise.below(out.len() + 1);
        match noise.below(7) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << noise.below(8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = [0, 0xff, 0x7f, 0x80, b'\n', b':', b'/', b'0'][noise.below(8)];
            }
            2 => {
                let n = noise.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| noise.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            3 if !out.is_empty() => {
                let end = (at + 1 + noise.below(64)).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 if !other.is_empty() => {
                let from = noise.below(other.len());
                let end = (from + 1 + noise.below(256)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            5 => out.truncate(at),
            _ => {
                // A run of one byte: long lines, long numbers, long lengths.
                let n = noise.below(300);
                let b = [b'9', b'a', 0xff, 0][noise.below(4)];
                out.splice(at..at, std::iter::repeat_n(b, n));
            }
        }
    }
    out
}

/// Runs `target` on the regression inputs, the seeds and `mutations` mutated seeds.
fn run(name: &str, target: fn(&[u8]), mutations: usize) {
    let regressions = inputs("regressions", name);
    let seeds = inputs("seeds", name);
    assert!(!seeds.is_empty(), "fuzz/seeds/{name} has no seeds");
    for input in regressions.iter().chain(&seeds) {
        target(input);
    }
    // FUZZ_MUTATIONS=N runs N mutations per target instead (longer runs by hand).
    let mutations = std::env::var("FUZZ_MUTATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(mutations);
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    for _ in 0..mutations {
        let a = &seeds[noise.below(seeds.len())];
        let b = &seeds[noise.below(seeds.len())];
        target(&mutate(&mut noise, a, b));
    }
    eprintln!(
        "{name}: {} regression inputs, {} seeds, {mutations} mutations",
        regressions.len(),
        seeds.len()
    );
}

#[test]
fn bitstream() {
    run("bitstream", fuzzing::bitstream, 20_000);
}

#[test]
fn stun() {
    run("stun", fuzzing::stun, 20_000);
}

#[test]
fn sdp() {
    run("sdp", fuzzing::sdp, 5_000);
}

#[test]
fn link() {
    run("link", fuzzing::link, 20_000);
}

#[test]
fn offer() {
    run("offer", fuzzing::offer, 1_000);
}

#[test]
fn datagram() {
    run("datagram", fuzzing::datagram, 3_000);
}

#[test]
fn http() {
    run("http", fuzzing::http, 1_500);
}
