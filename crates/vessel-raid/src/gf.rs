//! Arithmetic in GF(2^8) with polynomial 0x11d and generator 2, the field md, ISA-L and
//! most RAID 6 implementations use, so P and Q here are the standard syndromes:
//! `P = D0 ^ D1 ^ ... ^ Dn-1`, `Q = g^0·D0 ^ g^1·D1 ^ ... ^ g^(n-1)·Dn-1`.

const POLY: u16 = 0x11d;

const fn build_tables() -> ([u8; 512], [u8; 256]) {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= POLY;
        }
        i += 1;
    }
    while i < 512 {
        exp[i] = exp[i - 255];
        i += 1;
    }
    (exp, log)
}

const TABLES: ([u8; 512], [u8; 256]) = build_tables();
const EXP: [u8; 512] = TABLES.0;
const LOG: [u8; 256] = TABLES.1;

/// `a · b` in the field.
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        EXP[LOG[a as usize] as usize + LOG[b as usize] as usize]
    }
}

/// `g^n` for the generator `g = 2`.
pub fn pow2(n: usize) -> u8 {
    EXP[n % 255]
}

/// The multiplicative inverse of a non-zero element.
pub fn inv(a: u8) -> u8 {
    debug_assert!(a != 0, "zero has no inverse");
    EXP[255 - LOG[a as usize] as usize]
}

/// A 256-entry table of `c · x`, to multiply whole buffers by one constant.
fn mul_table(c: u8) -> [u8; 256] {
    let mut t = [0u8; 256];
    for (x, v) in t.iter_mut().enumerate() {
        *v = mul(c, x as u8);
    }
    t
}

/// `dst ^= src`.
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    let (dw, sw) = (dst[..n].chunks_exact_mut(8), src[..n].chunks_exact(8));
    let tail = n - n % 8;
    for (d, s) in dw.zip(sw) {
        let v = u64::from_ne_bytes(d.try_into().unwrap_or([0; 8]))
            ^ u64::from_ne_bytes(s.try_into().unwrap_or([0; 8]));
        d.copy_from_slice(&v.to_ne_bytes());
    }
    for (d, s) in dst[tail..n].iter_mut().zip(&src[tail..n]) {
        *d ^= *s;
    }
}

/// Eight field elements times g (= 2) at once: shift each byte left and reduce the bytes
/// whose top bit fell out by the polynomial (0x11d), as Linux's raid6 `int` code does.
fn mul2_x8(v: u64) -> u64 {
    let hi = v & 0x8080_8080_8080_8080;
    ((v << 1) & 0xfefe_fefe_fefe_fefe) ^ ((hi >> 7) * 0x1d)
}

/// `dst ^= c · src`.
pub fn mul_xor_into(dst: &mut [u8], c: u8, src: &[u8]) {
    if c == 1 {
        return xor_into(dst, src);
    }
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    let done = simd::mul_xor(dst, c, src);
    let t = mul_table(c);
    for (d, s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d ^= t[*s as usize];
    }
}

/// `buf = c · buf`.
pub fn scale(buf: &mut [u8], c: u8) {
    let done = simd::scale(buf, c);
    let t = mul_table(c);
    for b in buf[done..].iter_mut() {
        *b = t[*b as usize];
    }
}

/// Multiplication of whole buffers by a constant 32 bytes at a time where the CPU has
/// AVX2 (as ISA-L and Linux's raid6 do): `c · x = c · (x & 0x0f) ^ c · (x & 0xf0)`, two
/// 16-entry tables looked up with one byte shuffle each. Each function returns how many
/// leading bytes it did (a multiple of 32, or 0 without AVX2); the caller does the rest.
mod simd {
    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        /// The two nibble tables of `c`, each repeated in both 128-bit lanes.
        #[target_feature(enable = "avx2")]
        fn tables(c: u8) -> (__m256i, __m256i) {
            let (mut lo, mut hi) = ([0u8; 16], [0u8; 16]);
            for i in 0..16u8 {
                lo[i as usize] = super::super::mul(c, i);
                hi[i as usize] = super::super::mul(c, i << 4);
            }
            // SAFETY: each array is 16 readable bytes; the loads are unaligned ones.
            let (lo, hi) = unsafe {
                (
                    _mm_loadu_si128(lo.as_ptr().cast()),
                    _mm_loadu_si128(hi.as_ptr().cast()),
                )
            };
            (
                _mm256_broadcastsi128_si256(lo),
                _mm256_broadcastsi128_si256(hi),
            )
        }

        /// `c · v`, 32 bytes.
        #[target_feature(enable = "avx2")]
        fn mul32(v: __m256i, t: (__m256i, __m256i)) -> __m256i {
            let mask = _mm256_set1_epi8(0x0f);
            let lo = _mm256_shuffle_epi8(t.0, _mm256_and_si256(v, mask));
            let hi = _mm256_shuffle_epi8(t.1, _mm256_and_si256(_mm256_srli_epi64::<4>(v), mask));
            _mm256_xor_si256(lo, hi)
        }

        #[target_feature(enable = "avx2")]
        pub fn mul_xor(dst: &mut [u8], c: u8, src: &[u8]) -> usize {
            let t = tables(c);
            let n = dst.len().min(src.len()) / 32 * 32;
            for i in (0..n).step_by(32) {
                // SAFETY: `i + 32 <= n` is within both slices; unaligned loads and store.
                unsafe {
                    let s = _mm256_loadu_si256(src.as_ptr().add(i).cast());
                    let d = _mm256_loadu_si256(dst.as_ptr().add(i).cast());
                    let r = _mm256_xor_si256(d, mul32(s, t));
                    _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), r);
                }
            }
            n
        }

        /// P and Q of 32-byte columns, every data block read once: Q by Horner's rule
        /// (`Q = (..(D[n-1]·g ^ D[n-2])·g ..)·g ^ D[0]`), g· being a byte-wise shift
        /// reduced by 0x1d where the top bit fell out.
        #[target_feature(enable = "avx2")]
        pub fn gen_pq(data: &[&[u8]], p: &mut [u8], q: &mut [u8]) -> usize {
            let n = data
                .iter()
                .fold(p.len().min(q.len()), |n, d| n.min(d.len()))
                / 32
                * 32;
            let zero = _mm256_setzero_si256();
            let poly = _mm256_set1_epi8(0x1d);
            for i in (0..n).step_by(32) {
                let (mut pv, mut qv) = (zero, zero);
                for d in data.iter().rev() {
                    // SAFETY: `i + 32 <= n <= d.len()`; an unaligned load.
                    let v = unsafe { _mm256_loadu_si256(d.as_ptr().add(i).cast()) };
                    pv = _mm256_xor_si256(pv, v);
                    let top = _mm256_cmpgt_epi8(zero, qv);
                    let twice = _mm256_add_epi8(qv, qv);
                    qv = _mm256_xor_si256(_mm256_xor_si256(twice, _mm256_and_si256(top, poly)), v);
                }
                // SAFETY: `i + 32 <= n` is within `p` and `q`; unaligned stores.
                unsafe {
                    _mm256_storeu_si256(p.as_mut_ptr().add(i).cast(), pv);
                    _mm256_storeu_si256(q.as_mut_ptr().add(i).cast(), qv);
                }
            }
            n
        }

        #[target_feature(enable = "avx2")]
        pub fn scale(buf: &mut [u8], c: u8) -> usize {
            let t = tables(c);
            let n = buf.len() / 32 * 32;
            for i in (0..n).step_by(32) {
                // SAFETY: `i + 32 <= n` is within the slice; an unaligned load and store.
                unsafe {
                    let v = _mm256_loadu_si256(buf.as_ptr().add(i).cast());
                    _mm256_storeu_si256(buf.as_mut_ptr().add(i).cast(), mul32(v, t));
                }
            }
            n
        }
    }

    pub fn mul_xor(dst: &mut [u8], c: u8, src: &[u8]) -> usize {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { x86::mul_xor(dst, c, src) };
        }
        let _ = (dst, c, src);
        0
    }

    pub fn gen_pq(data: &[&[u8]], p: &mut [u8], q: &mut [u8]) -> usize {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { x86::gen_pq(data, p, q) };
        }
        let _ = (data, p, q);
        0
    }

    pub fn scale(buf: &mut [u8], c: u8) -> usize {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { x86::scale(buf, c) };
        }
        let _ = (buf, c);
        0
    }
}

/// Computes P (`xor`) of the data blocks into `p`.
pub fn gen_p(data: &[&[u8]], p: &mut [u8]) {
    p.fill(0);
    for d in data {
        xor_into(p, d);
    }
}

/// Computes P and Q of the data blocks; block `i` gets coefficient `g^i`.
pub fn gen_pq(data: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
    let done = simd::gen_pq(data, p, q);
    if done < p.len() {
        let rest: Vec<&[u8]> = data.iter().map(|d| &d[done.min(d.len())..]).collect();
        gen_pq_bytes(&rest, &mut p[done..], &mut q[done..]);
    }
}

/// [`gen_pq`] eight bytes at a time.
fn gen_pq_bytes(data: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
    gen_p(data, p);
    q.fill(0);
    // Horner: Q = (((D[n-1])·g ^ D[n-2])·g ^ ...)·g ^ D[0], eight bytes at a time.
    let two = mul_table(2);
    let n = q.len();
    let tail = n - n % 8;
    for d in data.iter().rev() {
        for (qw, dw) in q[..tail].chunks_exact_mut(8).zip(d[..tail].chunks_exact(8)) {
            let qv = u64::from_le_bytes(qw.try_into().unwrap_or([0; 8]));
            let dv = u64::from_le_bytes(dw.try_into().unwrap_or([0; 8]));
            qw.copy_from_slice(&(mul2_x8(qv) ^ dv).to_le_bytes());
        }
        for (qb, db) in q[tail..].iter_mut().zip(d[tail..].iter()) {
            *qb = two[*qb as usize] ^ *db;
        }
    }
}

/// Solves a row's missing data chunks, each into its buffer in `into` (pairs of data index
/// and buffer: exactly the indexes `data` has no chunk for), from the data chunks present
/// (`data(i)` for `i < n`), `p` and `q`, all of one length; nothing is copied but into
/// `into`. `None` if they do not suffice: two missing need both parities, one needs either.
pub fn solve_missing<'a>(
    n: usize,
    data: impl Fn(usize) -> Option<&'a [u8]>,
    p: Option<&[u8]>,
    q: Option<&[u8]>,
    into: &mut [(usize, &mut [u8])],
) -> Option<()> {
    let present = || (0..n).filter_map(|i| data(i).map(|c| (i, c)));
    debug_assert!(
        {
            let mut lens = present()
                .map(|(_, c)| c.len())
                .chain(into.iter().map(|(_, b)| b.len()))
                .chain(p.map(<[u8]>::len))
                .chain(q.map(<[u8]>::len));
            let first = lens.next();
            into.iter().all(|(i, _)| data(*i).is_none())
                && present().count() + into.len() == n
                && lens.all(|l| Some(l) == first)
        },
        "into holds the missing indexes, every chunk of one length"
    );
    match (into, p, q) {
        ([], _, _) => {}
        ([(_, dx)], Some(p), _) => {
            dx.copy_from_slice(p);
            for (_, c) in present() {
                xor_into(dx, c);
            }
        }
        ([(x, dx)], None, Some(q)) => {
            // Q ^ sum(g^i·Di, i != x) = g^x·Dx.
            dx.copy_from_slice(q);
            for (i, c) in present() {
                mul_xor_into(dx, pow2(i), c);
            }
            scale(dx, inv(pow2(*x)));
        }
        ([a, b], Some(p), Some(q)) => {
            let ((x, dx), (y, dy)) = if a.0 < b.0 { (a, b) } else { (b, a) };
            // Qxy into the lower index's buffer and Pxy into the other's, then solved
            // where they are.
            dx.copy_from_slice(q);
            dy.copy_from_slice(p);
            for (i, c) in present() {
                mul_xor_into(dx, pow2(i), c);
                xor_into(dy, c);
            }
            recover_two_in_place(*x, *y, dx, dy);
        }
        _ => return None,
    }
    Some(())
}

/// Given `qxy = g^x·Dx ^ g^y·Dy` in `dx` and `pxy = Dx ^ Dy` in `dy` (the syndromes with
/// every other block removed), for `x < y`, leaves `Dx` in `dx` and `Dy` in `dy`.
fn recover_two_in_place(x: usize, y: usize, dx: &mut [u8], dy: &mut [u8]) {
    debug_assert!(x < y, "in the order of the index");
    // Dx = (g^(y-x)·Pxy ^ g^(-x)·Qxy) / (g^(y-x) ^ 1), and Dy = Pxy ^ Dx.
    let gyx = pow2(y - x);
    let denom = inv(gyx ^ 1);
    scale(dx, mul(inv(pow2(x)), denom));
    mul_xor_into(dx, mul(gyx, denom), dy);
    xor_into(dy, dx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_basics() {
        // 0x80 · 2 overflows and reduces by 0x11d.
        assert_eq!(mul(0x80, 2), 0x1d);
        assert_eq!(mul(3, 7), 9);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1);
        }
        assert_eq!(pow2(8), 0x1d);
    }

    #[test]
    fn q_matches_hand_computed_vector() {
        // Stripe of four one-byte data blocks: 0x01, 0x02, 0x03, 0x80.
        // Q = 1·0x01 ^ 2·0x02 ^ 4·0x03 ^ 8·0x80, with 2·0x02 = 0x04, 4·0x03 = 0x0c and
        // 0x80·2 = 0x1d, 0x1d·2 = 0x3a, 0x3a·2 = 0x74, so 8·0x80 = 0x74.
        // Q = 0x01 ^ 0x04 ^ 0x0c ^ 0x74 = 0x7d; P = 0x01 ^ 0x02 ^ 0x03 ^ 0x80 = 0x80.
        let d: [&[u8]; 4] = [&[0x01], &[0x02], &[0x03], &[0x80]];
        let (mut p, mut q) = ([0u8], [0u8]);
        gen_pq(&d, &mut p, &mut q);
        assert_eq!(p, [0x80]);
        assert_eq!(q, [0x7d]);
    }

    /// The whole-buffer multiplications (32 bytes at a time where the CPU allows, the
    /// rest byte by byte) agree with `mul` for every constant, byte value and tail length.
    #[test]
    fn buffer_multiplication_matches_the_field() {
        let src: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).chain(0..37).collect();
        for c in 0..=255u8 {
            for len in [0, 1, 31, 32, 33, 64, src.len()] {
                let src = &src[..len];
                let base: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(73)).collect();
                let mut dst = base.clone();
                mul_xor_into(&mut dst, c, src);
                let want: Vec<u8> = base.iter().zip(src).map(|(b, s)| b ^ mul(c, *s)).collect();
                assert_eq!(dst, want, "mul_xor c={c} len={len}");
                let mut buf = src.to_vec();
                scale(&mut buf, c);
                let want: Vec<u8> = src.iter().map(|s| mul(c, *s)).collect();
                assert_eq!(buf, want, "scale c={c} len={len}");
            }
        }
    }

    /// P and Q (32 bytes at a time where the CPU allows, then eight, then one) agree with
    /// the syndromes computed byte by byte with `mul`, for any number of blocks and length.
    #[test]
    fn p_and_q_match_the_definition() {
        for blocks in 0..7usize {
            for len in [0, 1, 8, 31, 32, 33, 40, 96, 4096 + 13] {
                let data: Vec<Vec<u8>> = (0..blocks)
                    .map(|b| {
                        (0..len)
                            .map(|i| (i as u8).wrapping_mul(151) ^ (b as u8).wrapping_mul(59))
                            .collect()
                    })
                    .collect();
                let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
                let (mut p, mut q) = (vec![0xeeu8; len], vec![0xeeu8; len]);
                gen_pq(&refs, &mut p, &mut q);
                for i in 0..len {
                    let want_p = data.iter().fold(0, |a, d| a ^ d[i]);
                    let want_q = data
                        .iter()
                        .enumerate()
                        .fold(0, |a, (b, d)| a ^ mul(pow2(b), d[i]));
                    assert_eq!(p[i], want_p, "P blocks={blocks} len={len} at {i}");
                    assert_eq!(q[i], want_q, "Q blocks={blocks} len={len} at {i}");
                }
            }
        }
    }

    #[test]
    fn solve_missing_recovers_any_one_or_two_of_six() {
        let data: Vec<Vec<u8>> = (0..6u8)
            .map(|i| {
                (0..100u8)
                    .map(|j| j.wrapping_mul(31) ^ i.wrapping_mul(77))
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let (mut p, mut q) = (vec![0u8; 100], vec![0u8; 100]);
        gen_pq(&refs, &mut p, &mut q);
        // Every set of one or two missing (a pair in either order), with the parity that
        // solves it.
        let mut cases: Vec<(Vec<usize>, bool, bool)> = Vec::new();
        for x in 0..6 {
            cases.push((vec![x], true, false));
            cases.push((vec![x], false, true));
            for y in x + 1..6 {
                cases.push((vec![x, y], true, true));
                cases.push((vec![y, x], true, true));
            }
        }
        for (missing, with_p, with_q) in cases {
            let mut bufs = vec![vec![0xeeu8; 100]; missing.len()];
            let mut into: Vec<(usize, &mut [u8])> = missing
                .iter()
                .copied()
                .zip(bufs.iter_mut().map(Vec::as_mut_slice))
                .collect();
            let have = |i: usize| (!missing.contains(&i)).then(|| refs[i]);
            let (pp, qq) = (with_p.then_some(&p[..]), with_q.then_some(&q[..]));
            assert!(solve_missing(6, have, pp, qq, &mut into).is_some());
            for (d, b) in missing.iter().zip(&bufs) {
                assert_eq!(b, &data[*d], "missing {missing:?}, P {with_p}, Q {with_q}");
            }
        }
        // Two missing with one parity, or one with none: not solvable.
        let mut b = (vec![0u8; 100], vec![0u8; 100]);
        let mut into = [(0, &mut b.0[..]), (1, &mut b.1[..])];
        let have = |i: usize| (i > 1).then(|| refs[i]);
        assert!(solve_missing(6, have, Some(&p), None, &mut into).is_none());
        let have_but_0 = |i: usize| (i > 0).then(|| refs[i]);
        assert!(solve_missing(6, have_but_0, None, None, &mut into[..1]).is_none());
    }
}
