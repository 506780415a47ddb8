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
    let t = mul_table(c);
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= t[*s as usize];
    }
}

/// `buf = c · buf`.
pub fn scale(buf: &mut [u8], c: u8) {
    let t = mul_table(c);
    for b in buf.iter_mut() {
        *b = t[*b as usize];
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

/// Given `pxy = Dx ^ Dy` and `qxy = g^x·Dx ^ g^y·Dy` (the syndromes with every other
/// block removed), recovers `Dx` into `dx` and `Dy` into `dy`, for `x != y`.
pub fn recover_two(x: usize, y: usize, pxy: &[u8], qxy: &[u8], dx: &mut [u8], dy: &mut [u8]) {
    // Dx = (g^(y-x)·Pxy ^ g^(-x)·Qxy) / (g^(y-x) ^ 1), and Dy = Pxy ^ Dx.
    let (x, y, swap) = if x < y { (x, y, false) } else { (y, x, true) };
    let gyx = pow2(y - x);
    let denom = inv(gyx ^ 1);
    let a = mul(gyx, denom);
    let b = mul(inv(pow2(x)), denom);
    let (dx, dy) = if swap { (dy, dx) } else { (dx, dy) };
    dx.fill(0);
    mul_xor_into(dx, a, pxy);
    mul_xor_into(dx, b, qxy);
    dy.copy_from_slice(pxy);
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

    #[test]
    fn recover_any_two_data_blocks() {
        let data: Vec<Vec<u8>> = (0..6u8)
            .map(|i| {
                (0..64u8)
                    .map(|j| j.wrapping_mul(31) ^ i.wrapping_mul(97))
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let (mut p, mut q) = (vec![0u8; 64], vec![0u8; 64]);
        gen_pq(&refs, &mut p, &mut q);
        for x in 0..6 {
            for y in 0..6 {
                if x == y {
                    continue;
                }
                let (mut pxy, mut qxy) = (p.clone(), q.clone());
                for (i, d) in data.iter().enumerate() {
                    if i != x && i != y {
                        xor_into(&mut pxy, d);
                        mul_xor_into(&mut qxy, pow2(i), d);
                    }
                }
                let (mut dx, mut dy) = (vec![0u8; 64], vec![0u8; 64]);
                recover_two(x, y, &pxy, &qxy, &mut dx, &mut dy);
                assert_eq!(dx, data[x], "x={x} y={y}");
                assert_eq!(dy, data[y], "x={x} y={y}");
            }
        }
    }
}
