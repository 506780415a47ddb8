//! Storage benchmark: `RaidArray` at RAID 0, 1, 5 and 6 against the raw member files,
//! driven with the same access patterns in the same run.
//!
//! ```sh
//! cargo run --release -p vessel-raid --example raid-bench -- \
//!     --dir /var/tmp --members 4 --member-mib 256 --runs 3 --json out.json
//! ```
//!
//! Both sides go through the same member I/O path (`vessel_raid::member::Member`: `pread` and
//! `pwrite` with `O_DIRECT` where the file system accepts it, aligned buffers); timed writes
//! end with `flush` (array) or `fdatasync` (raw files) inside the timed region. If
//! `O_DIRECT` is refused, the page cache is dropped before every read test (needs root).
//!
//! References (what each array figure is divided by):
//! - RAID 0, 5, 6: the N raw files driven in parallel (one thread per file for sequential
//!   tests, the random-test threads spread over the N files); for RAID 5 and 6 sequential
//!   writes scaled by (N-1)/N resp. (N-2)/N, the share of member bandwidth that carries
//!   data. Sequential reads are not scaled: they need not touch parity (healthy) or read
//!   no more member bytes than they return (degraded), so on a device where skipping is
//!   free, as here, their ideal is the whole raw figure.
//! - RAID 1: one raw file with the same pattern.
//!
//! Sequential tests use 1 MiB requests on the raw files; on the array 1 MiB, rounded down to
//! whole stripes for RAID 5 and 6 (full-stripe writes), plus a 1 MiB figure when 1 MiB is
//! not a whole number of stripes. Random tests issue 4 KiB requests at uniformly random
//! aligned offsets for a fixed time, from 1 thread and from `--threads` threads. Every
//! measurement is repeated `--runs` times, array and raw alternating which goes first;
//! medians are reported.
//!
//! Beside that reference every row has a second one, the `efficiency` reference (`hand.rs`):
//! the member I/O the level must do for the same requests (RAID 1 writes: the data to every
//! raw file at once; RAID 5/6 random writes: md's read-modify-write; full stripes: data
//! plus parity; degraded reads: the survivors; rebuilds: the survivors read, the new
//! member written), done by hand, each request's I/Os in flight together: reads on the
//! array's own member files (the same blocks, in the same state of the host's caches),
//! writes on the raw files (a rebuild's survivors read from the member files, the new
//! member written to a raw file). `efficiency` = array / that: the engine's own
//! cost, which one shared disk cannot hide.
//!
//! For RAID 5 and 6 it then fails member 0 and reads degraded (RAID 6 also with members
//! 0 and 1 failed), and rebuilds, reporting the rebuild rate (member bytes per second)
//! against one raw file's sequential read; these too are paired with their raw reference
//! and repeated.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vessel_raid::layout::Geometry;
use vessel_raid::member::{AlignedBuf, Member};
use vessel_raid::{RaidArray, RaidConfig, RaidLevel};

mod hand;
use hand::{Hand, Worker};

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
/// Raw files are driven in the same member region the array uses: after its 1 MiB header.
const RAW_OFFSET: u64 = MIB;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Opts {
    dir: PathBuf,
    members: usize,
    member_mib: u64,
    chunk_kib: u64,
    levels: Vec<RaidLevel>,
    runs: usize,
    rand_secs: f64,
    threads: usize,
    json: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: raid-bench [--dir DIR] [--members N] [--member-mib MIB] [--chunk-kib KIB]\n\
         \x20                 [--levels 0,1,5,6] [--runs R] [--rand-secs S] [--threads T] [--json FILE]"
    );
    std::process::exit(2);
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        dir: PathBuf::from("/var/tmp"),
        members: 4,
        member_mib: 256,
        chunk_kib: 64,
        levels: vec![
            RaidLevel::Raid0,
            RaidLevel::Raid1,
            RaidLevel::Raid5,
            RaidLevel::Raid6,
        ],
        runs: 3,
        rand_secs: 2.0,
        threads: 4,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--dir" => o.dir = PathBuf::from(val()),
            "--members" => o.members = val().parse().unwrap_or_else(|_| usage()),
            "--member-mib" => o.member_mib = val().parse().unwrap_or_else(|_| usage()),
            "--chunk-kib" => o.chunk_kib = val().parse().unwrap_or_else(|_| usage()),
            "--runs" => o.runs = val().parse().unwrap_or_else(|_| usage()),
            "--rand-secs" => o.rand_secs = val().parse().unwrap_or_else(|_| usage()),
            "--threads" => o.threads = val().parse().unwrap_or_else(|_| usage()),
            "--json" => o.json = Some(PathBuf::from(val())),
            "--levels" => {
                o.levels = val()
                    .split(',')
                    .map(|l| {
                        l.parse()
                            .ok()
                            .and_then(RaidLevel::from_code)
                            .unwrap_or_else(|| usage())
                    })
                    .collect()
            }
            _ => usage(),
        }
    }
    if o.runs == 0 || o.threads == 0 || o.members < 4 || o.member_mib < 16 {
        eprintln!("need --runs >= 1, --threads >= 1, --members >= 4, --member-mib >= 16");
        usage();
    }
    o
}

/// A small deterministic generator (splitmix64), so both sides draw the same kind of offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn filled(len: usize, seed: u64) -> AlignedBuf {
    let mut b = AlignedBuf::new(len);
    let mut rng = Rng(seed);
    for c in b.as_mut_slice().chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    b
}

/// CPU seconds (user + system) used by this process so far.
fn cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete rusage into the valid pointer it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised (it was zeroed anyway).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One timed measurement: an amount (bytes or operations) over wall time, with CPU time.
#[derive(Clone, Copy)]
struct Sample {
    amount: f64,
    secs: f64,
    cpu: f64,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.amount / self.secs
    }
}

fn timed(f: impl FnOnce() -> Result<f64, BoxError>) -> Result<Sample, BoxError> {
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let amount = f()?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(Sample {
        amount,
        secs,
        cpu: cpu_seconds() - c0,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

// ---- the raw side -------------------------------------------------------------------

/// Streams `bytes` sequentially through each file in parallel (one thread per file), in
/// `req`-byte requests; writes end with `fdatasync`. Returns the bytes moved.
fn raw_seq(files: &[&Member], bytes: u64, req: usize, write: bool) -> Result<f64, BoxError> {
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                s.spawn(move || -> Result<(), BoxError> {
                    let mut buf = filled(req, 0x5eed + i as u64);
                    let mut pos = 0u64;
                    while pos < bytes {
                        let len = (req as u64).min(bytes - pos) as usize;
                        let b = &mut buf.as_mut_slice()[..len];
                        if write {
                            f.write_at(RAW_OFFSET + pos, b)?;
                        } else {
                            f.read_at(RAW_OFFSET + pos, b)?;
                        }
                        pos += len as u64;
                    }
                    if write {
                        f.sync()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "raw I/O thread panicked")??;
        }
        Ok::<_, BoxError>(())
    })?;
    Ok((bytes * files.len() as u64) as f64)
}

/// `threads` threads issue 4 KiB requests at random aligned offsets of random files for
/// `secs`; writes end with `fdatasync` of every file. Returns the operations done.
fn raw_rand(
    files: &[&Member],
    area: u64,
    threads: usize,
    secs: f64,
    write: bool,
) -> Result<f64, BoxError> {
    let ops = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let ops = &ops;
                s.spawn(move || -> Result<(), BoxError> {
                    let mut rng = Rng(0xabc + t as u64);
                    let mut buf = filled(BLOCK as usize, t as u64);
                    let mut n = 0;
                    while Instant::now() < deadline {
                        let f = files[(rng.next() % files.len() as u64) as usize];
                        let off = RAW_OFFSET + rng.next() % (area / BLOCK) * BLOCK;
                        if write {
                            f.write_at(off, buf.as_slice())?;
                        } else {
                            f.read_at(off, buf.as_mut_slice())?;
                        }
                        n += 1;
                    }
                    ops.fetch_add(n, Ordering::Relaxed);
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "raw I/O thread panicked")??;
        }
        Ok::<_, BoxError>(())
    })?;
    if write {
        for f in files {
            f.sync()?;
        }
    }
    Ok(ops.into_inner() as f64)
}

// ---- the array side -----------------------------------------------------------------

/// Reads or writes the whole array front to back in `req`-byte requests; writes end with
/// `flush`. Returns the bytes moved.
fn array_seq(array: &RaidArray, req: usize, write: bool) -> Result<f64, BoxError> {
    let size = array.size();
    let mut buf = filled(req, 0xa11a);
    let mut pos = 0u64;
    while pos < size {
        let len = (req as u64).min(size - pos) as usize;
        let b = &mut buf.as_mut_slice()[..len];
        if write {
            array.write_at(pos, b)?;
        } else {
            array.read_at(pos, b)?;
        }
        pos += len as u64;
    }
    if write {
        array.flush()?;
    }
    Ok(size as f64)
}

/// `threads` threads issue 4 KiB requests at random aligned array offsets for `secs`;
/// writes end with `flush`. Returns the operations done.
fn array_rand(array: &RaidArray, threads: usize, secs: f64, write: bool) -> Result<f64, BoxError> {
    let blocks = array.size() / BLOCK;
    let ops = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let ops = &ops;
                s.spawn(move || -> Result<(), BoxError> {
                    let mut rng = Rng(0xabc + t as u64);
                    let mut buf = filled(BLOCK as usize, t as u64);
                    let mut n = 0;
                    while Instant::now() < deadline {
                        let off = rng.next() % blocks * BLOCK;
                        if write {
                            array.write_at(off, buf.as_slice())?;
                        } else {
                            array.read_at(off, buf.as_mut_slice())?;
                        }
                        n += 1;
                    }
                    ops.fetch_add(n, Ordering::Relaxed);
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "array I/O thread panicked")??;
        }
        Ok::<_, BoxError>(())
    })?;
    if write {
        array.flush()?;
    }
    Ok(ops.into_inner() as f64)
}

// ---- the hand-made member I/O (the efficiency reference) -----------------------------

/// The member I/O of reading or writing the whole array front to back in `req`-byte
/// requests, with `failed` members out; writes end with `fdatasync`. Returns the bytes.
fn hand_seq(
    h: &Hand,
    geo: &Geometry,
    req: u64,
    write: bool,
    failed: &[usize],
) -> Result<f64, BoxError> {
    let mut w = Worker::new()?;
    let size = geo.size();
    let mut pos = 0u64;
    while pos < size {
        let len = req.min(size - pos);
        h.run(&mut w, &hand::plan(geo, pos, len, write, failed))?;
        pos += len;
    }
    if write {
        h.sync()?;
    }
    Ok(size as f64)
}

/// The member I/O of `threads` threads issuing 4 KiB requests at random aligned array
/// offsets for `secs`. Returns the requests done.
fn hand_rand(
    h: &Hand,
    geo: &Geometry,
    threads: usize,
    secs: f64,
    write: bool,
) -> Result<f64, BoxError> {
    let blocks = geo.size() / BLOCK;
    let ops = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let ops = &ops;
                s.spawn(move || -> Result<(), BoxError> {
                    let mut w = Worker::new()?;
                    let mut rng = Rng(0xabc + t as u64);
                    let mut n = 0;
                    while Instant::now() < deadline {
                        let off = rng.next() % blocks * BLOCK;
                        h.run(&mut w, &hand::plan(geo, off, BLOCK, write, &[]))?;
                        n += 1;
                    }
                    ops.fetch_add(n, Ordering::Relaxed);
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "hand I/O thread panicked")??;
        }
        Ok::<_, BoxError>(())
    })?;
    if write {
        h.sync()?;
    }
    Ok(ops.into_inner() as f64)
}

/// The member I/O of rebuilding member `target` (with `missing` also out) in 1 MiB spans.
/// Returns the member bytes rebuilt.
fn hand_rebuild(
    h: &Hand,
    geo: &Geometry,
    target: usize,
    missing: &[usize],
) -> Result<f64, BoxError> {
    let mut w = Worker::new()?;
    let step = (MIB / geo.chunk).max(1);
    let rows = geo.rows();
    let mut row = 0;
    while row < rows {
        let end = (row + step).min(rows);
        h.run(&mut w, &hand::rebuild_plan(geo, row..end, target, missing))?;
        row = end;
    }
    h.sync()?;
    Ok(geo.data_size as f64)
}

// ---- results ------------------------------------------------------------------------

struct Row {
    level: RaidLevel,
    test: String,
    unit: &'static str,
    array: Summary,
    reference: Summary,
    reference_is: String,
    ideal: f64,
    /// The member I/O the level must do, by hand.
    hand: Summary,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.array.rate / self.reference.rate
    }

    fn efficiency(&self) -> f64 {
        self.array.rate / self.hand.rate
    }
}

/// Several samples of one side of a test.
#[derive(Clone)]
struct Summary {
    /// Median rate.
    rate: f64,
    /// Median CPU seconds per unit of amount.
    cpu: f64,
    /// Every rate, in the order measured.
    rates: Vec<f64>,
}

fn summarize(samples: &[Sample], scale: f64) -> Summary {
    let rates: Vec<f64> = samples.iter().map(|s| s.rate() * scale).collect();
    Summary {
        rate: median(rates.clone()),
        cpu: median(samples.iter().map(|s| s.cpu / s.amount).collect()),
        rates,
    }
}

struct Bench {
    opts: Opts,
    work: PathBuf,
    members: Vec<PathBuf>,
    raw: Vec<Member>,
    /// The hand-made member I/O of writes, on the raw files.
    hand: Hand,
    /// The hand-made member I/O of reads, on the array's own member files: the blocks the
    /// array reads, in the same state of the host's caches (on the raw files, sequential
    /// read rounds swung by a factor of two between the sides for no reason of theirs).
    hand_reads: Hand,
    direct: bool,
}

/// What the run found.
#[derive(Default)]
struct Results {
    rows: Vec<Row>,
    notes: Vec<String>,
}

fn level_name(l: RaidLevel) -> String {
    format!("RAID {l}")
}

impl Bench {
    fn before_read(&self) {
        if !self.direct {
            drop_caches();
        }
    }

    /// Alternates array and raw measurements `runs` times; returns both sample lists.
    fn pair(
        &self,
        read: bool,
        mut array: impl FnMut() -> Result<Sample, BoxError>,
        mut raw: impl FnMut() -> Result<Sample, BoxError>,
    ) -> Result<(Vec<Sample>, Vec<Sample>), BoxError> {
        let (mut a, mut r) = (Vec::new(), Vec::new());
        for run in 0..self.opts.runs {
            for side in 0..2 {
                if read {
                    self.before_read();
                }
                if (run + side) % 2 == 0 {
                    a.push(array()?);
                } else {
                    r.push(raw()?);
                }
            }
        }
        Ok((a, r))
    }

    /// Alternates array, raw and hand-made measurements `runs` times, rotating which goes
    /// first; returns the three sample lists.
    #[allow(clippy::type_complexity)]
    fn trio(
        &self,
        read: bool,
        mut array: impl FnMut() -> Result<Sample, BoxError>,
        mut raw: impl FnMut() -> Result<Sample, BoxError>,
        mut hand: impl FnMut() -> Result<Sample, BoxError>,
    ) -> Result<(Vec<Sample>, Vec<Sample>, Vec<Sample>), BoxError> {
        let (mut a, mut r, mut h) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..self.opts.runs {
            for side in 0..3 {
                if read {
                    self.before_read();
                }
                match (run + side) % 3 {
                    0 => a.push(array()?),
                    1 => r.push(raw()?),
                    _ => h.push(hand()?),
                }
            }
        }
        Ok((a, r, h))
    }
}

impl Results {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        level: RaidLevel,
        test: &str,
        unit: &'static str,
        array: Summary,
        reference: Summary,
        reference_is: &str,
        ideal: f64,
        hand: Summary,
    ) {
        let row = Row {
            level,
            test: test.to_owned(),
            unit,
            array,
            reference,
            reference_is: reference_is.to_owned(),
            ideal,
            hand,
        };
        eprintln!(
            "  {:<7} {:<40} {:>9.1} / {:>9.1} {:<5} = {:.2}; / {:>9.1} by hand = efficiency {:.2}",
            level_name(level),
            test,
            row.array.rate,
            row.reference.rate,
            unit,
            row.ratio(),
            row.hand.rate,
            row.efficiency()
        );
        self.rows.push(row);
    }
}

impl Bench {
    fn run_level(&self, level: RaidLevel, res: &mut Results) -> Result<(), BoxError> {
        let n = self.opts.members;
        let t = self.opts.threads;
        let secs = self.opts.rand_secs;
        eprintln!("{}: creating over {n} members", level_name(level));
        let config = RaidConfig {
            force: true,
            ..RaidConfig::new(level).chunk_size(self.opts.chunk_kib << 10)
        };
        let t0 = Instant::now();
        let array = RaidArray::create(&self.members, &config)?;
        let create_secs = t0.elapsed().as_secs_f64();
        let geo = array.geometry();
        let per_member = geo.data_size;
        let k = geo.data_members();
        res.notes.push(format!(
            "{}: array {} MiB, {} MiB of data per member, created (initial sync) in {:.1} s",
            level_name(level),
            array.size() / MIB,
            per_member / MIB,
            create_secs
        ));
        let all: Vec<&Member> = self.raw.iter().collect();
        let one: Vec<&Member> = self.raw.iter().take(1).collect();
        let read_ref_name = if level == RaidLevel::Raid1 {
            "1 raw file".to_owned()
        } else {
            format!("{n} raw files in parallel")
        };
        let (reference, ref_name, share) = match level {
            RaidLevel::Raid1 => (&one, "1 raw file".to_owned(), 1.0),
            RaidLevel::Raid0 => (&all, format!("{n} raw files in parallel"), 1.0),
            _ => (
                &all,
                format!("{k}/{n} of {n} raw files in parallel"),
                k as f64 / n as f64,
            ),
        };
        let rand_ref = if level == RaidLevel::Raid1 {
            "1 raw file, same threads".to_owned()
        } else {
            format!("{n} raw files, same threads")
        };
        let stripe_req = if matches!(level, RaidLevel::Raid5 | RaidLevel::Raid6) {
            (MIB / geo.row_bytes()).max(1) * geo.row_bytes()
        } else {
            MIB
        } as usize;
        let mb = 1.0 / 1e6;
        let ideal_randwrite = match level {
            RaidLevel::Raid5 => 0.25,
            RaidLevel::Raid6 => 1.0 / 6.0,
            _ => 1.0,
        };

        let (hand, hand_reads) = (&self.hand, &self.hand_reads);
        // Sequential writes, full stripes.
        let (a, r, h) = self.trio(
            false,
            || timed(|| array_seq(&array, stripe_req, true)),
            || timed(|| raw_seq(reference, per_member, MIB as usize, true)),
            || timed(|| hand_seq(hand, &geo, stripe_req as u64, true, &[])),
        )?;
        let test = if stripe_req as u64 == MIB {
            "seq write, 1 MiB".to_owned()
        } else {
            format!("seq write, {} KiB (full stripes)", stripe_req >> 10)
        };
        res.push(
            level,
            &test,
            "MB/s",
            summarize(&a, mb),
            summarize(&r, mb * share),
            &ref_name,
            1.0,
            summarize(&h, mb),
        );
        if stripe_req as u64 != MIB {
            let (a, h) = self.pair(
                false,
                || timed(|| array_seq(&array, MIB as usize, true)),
                || timed(|| hand_seq(hand, &geo, MIB, true, &[])),
            )?;
            res.push(
                level,
                "seq write, 1 MiB (partial stripes)",
                "MB/s",
                summarize(&a, mb),
                summarize(&r, mb * share),
                &ref_name,
                1.0,
                summarize(&h, mb),
            );
        }

        // Sequential reads.
        let (a, r, h) = self.trio(
            true,
            || timed(|| array_seq(&array, MIB as usize, false)),
            || timed(|| raw_seq(reference, per_member, MIB as usize, false)),
            || timed(|| hand_seq(hand_reads, &geo, MIB, false, &[])),
        )?;
        res.push(
            level,
            "seq read, 1 MiB",
            "MB/s",
            summarize(&a, mb),
            summarize(&r, mb),
            &read_ref_name,
            1.0,
            summarize(&h, mb),
        );

        // Random 4 KiB, one thread and `t` threads.
        for (write, threads) in [(false, 1), (false, t), (true, 1), (true, t)] {
            let (a, r, h) = self.trio(
                !write,
                || timed(|| array_rand(&array, threads, secs, write)),
                || timed(|| raw_rand(reference, per_member, threads, secs, write)),
                || {
                    let h = if write { hand } else { hand_reads };
                    timed(|| hand_rand(h, &geo, threads, secs, write))
                },
            )?;
            let what = if write { "write" } else { "read" };
            let s = if threads == 1 { "" } else { "s" };
            res.push(
                level,
                &format!("rand {what} 4 KiB, {threads} thread{s}"),
                "IOPS",
                summarize(&a, 1.0),
                summarize(&r, 1.0),
                &rand_ref,
                if write { ideal_randwrite } else { 1.0 },
                summarize(&h, 1.0),
            );
        }

        if matches!(level, RaidLevel::Raid5 | RaidLevel::Raid6) {
            self.degraded(&array, level, reference, &read_ref_name, res)?;
        }
        Ok(())
    }

    /// Degraded reads and rebuilds of a parity array, each paired with its raw reference.
    fn degraded(
        &self,
        array: &RaidArray,
        level: RaidLevel,
        reference: &[&Member],
        ref_name: &str,
        res: &mut Results,
    ) -> Result<(), BoxError> {
        let mb = 1.0 / 1e6;
        let data_size = array.geometry().data_size;
        let ensure_failed = |m: usize| -> Result<(), BoxError> {
            if array.status()[m].state != vessel_raid::SlotState::Failed {
                array.fail_member(m)?;
            }
            Ok(())
        };
        let failed_sets: &[&[usize]] = if level == RaidLevel::Raid6 {
            &[&[0], &[0, 1]]
        } else {
            &[&[0]]
        };
        for failed in failed_sets {
            for &m in *failed {
                ensure_failed(m)?;
            }
            let geo = array.geometry();
            let (a, r, h) = self.trio(
                true,
                || timed(|| array_seq(array, MIB as usize, false)),
                || timed(|| raw_seq(reference, data_size, MIB as usize, false)),
                || timed(|| hand_seq(&self.hand_reads, &geo, MIB, false, failed)),
            )?;
            let which = if failed.len() == 1 {
                "1 member failed".to_owned()
            } else {
                format!("{} members failed", failed.len())
            };
            res.push(
                level,
                &format!("degraded seq read, 1 MiB, {which}"),
                "MB/s",
                summarize(&a, mb),
                summarize(&r, mb),
                ref_name,
                1.0,
                summarize(&h, mb),
            );
        }
        // Rebuilds of member 0's slot (its own file put back, rewritten in full); with
        // RAID 6 first of member 1 while member 0 is still missing, a double failure. The
        // reference is one raw file read sequentially.
        let cases: &[(usize, &[usize])] = if level == RaidLevel::Raid6 {
            &[(1, &[0]), (0, &[])]
        } else {
            &[(0, &[])]
        };
        for &(m, also_missing) in cases {
            let geo = array.geometry();
            // By hand: the survivors read from the member files (the blocks the array
            // reads), the new member written to a raw file (not to the array's own).
            let files: Vec<PathBuf> = (0..self.members.len())
                .map(|i| match i == m {
                    true => self.raw[i].path().to_path_buf(),
                    false => self.members[i].clone(),
                })
                .collect();
            let by_hand = Hand::open(&files)?;
            let (a, r, h) = self.trio(
                false,
                || {
                    for &o in also_missing.iter().chain([&m]) {
                        ensure_failed(o)?;
                    }
                    array.replace_member(m, &self.members[m])?;
                    timed(|| {
                        array.rebuild(|_, _| {})?;
                        Ok(data_size as f64)
                    })
                },
                || timed(|| raw_seq(&[&self.raw[0]], data_size, MIB as usize, false)),
                || timed(|| hand_rebuild(&by_hand, &geo, m, also_missing)),
            )?;
            let what = match also_missing.len() {
                0 => "rebuild 1 member, others whole".to_owned(),
                n => format!("rebuild 1 member, {n} other missing"),
            };
            res.push(
                level,
                &what,
                "MB/s",
                summarize(&a, mb),
                summarize(&r, mb),
                "seq read of 1 raw file",
                1.0,
                summarize(&h, mb),
            );
        }
        if array.is_degraded() {
            return Err("array still degraded after the rebuilds".into());
        }
        Ok(())
    }
}

impl Results {
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| level | test | array | reference | ratio | ideal | member I/O by hand | efficiency | CPU array / ref |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for r in &self.rows {
            let cpu = if r.reference.cpu > 0.0 {
                format!("{:.1}", r.array.cpu / r.reference.cpu)
            } else {
                "-".to_owned()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} {} | {:.0} {} ({}) | {:.2} | {} | {:.0} {} | **{:.2}** | {} |",
                level_name(r.level),
                r.test,
                r.array.rate,
                r.unit,
                r.reference.rate,
                r.unit,
                r.reference_is,
                r.ratio(),
                fmt_ideal(r.ideal),
                r.hand.rate,
                r.unit,
                r.efficiency(),
                cpu
            );
        }
        out
    }

    fn json(&self, o: &Opts, direct: bool) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::from("{\n  \"conditions\": {");
        let _ = write!(
            out,
            "\"members\": {}, \"member_mib\": {}, \"chunk_kib\": {}, \"runs\": {}, \
             \"rand_secs\": {}, \"threads\": {}, \"o_direct\": {}, \"dir\": \"{}\", \"notes\": [",
            o.members,
            o.member_mib,
            o.chunk_kib,
            o.runs,
            o.rand_secs,
            o.threads,
            direct,
            esc(&o.dir.display().to_string())
        );
        for (i, n) in self.notes.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(out, "{sep}\"{}\"", esc(n));
        }
        out.push_str("]},\n  \"results\": [\n");
        for (i, r) in self.rows.iter().enumerate() {
            let sep = if i + 1 == self.rows.len() { "" } else { "," };
            let _ = writeln!(
                out,
                "    {{\"level\": {}, \"test\": \"{}\", \"unit\": \"{}\", \"array\": {:.1}, \
                 \"reference\": {:.1}, \"reference_is\": \"{}\", \"ratio\": {:.3}, \
                 \"ideal\": {:.3}, \"array_runs\": {}, \"reference_runs\": {}, \
                 \"array_cpu_s_per_unit\": {:e}, \"reference_cpu_s_per_unit\": {:e}, \
                 \"hand\": {:.1}, \"hand_runs\": {}, \"efficiency\": {:.3}}}{sep}",
                r.level.code(),
                esc(&r.test),
                r.unit,
                r.array.rate,
                r.reference.rate,
                esc(&r.reference_is),
                r.ratio(),
                r.ideal,
                list(&r.array.rates),
                list(&r.reference.rates),
                r.array.cpu,
                r.reference.cpu,
                r.hand.rate,
                list(&r.hand.rates),
                r.efficiency()
            );
        }
        out.push_str("  ]\n}\n");
        out
    }
}

/// A JSON array of rates.
fn list(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
    format!("[{}]", items.join(", "))
}

fn fmt_ideal(x: f64) -> String {
    match x {
        x if (x - 1.0).abs() < 1e-9 => "1".to_owned(),
        x if (x - 0.25).abs() < 1e-9 => "1/4".to_owned(),
        x if (x - 1.0 / 6.0).abs() < 1e-9 => "1/6".to_owned(),
        x => format!("{x:.2}"),
    }
}

/// Creates a file of `bytes` filled with pseudo-random data through `O_DIRECT`, so no
/// extent is left unwritten (first writes to those cost the file system extra work).
fn prefill(path: &Path, bytes: u64, seed: u64) -> Result<Member, BoxError> {
    std::fs::File::create(path)?.set_len(bytes)?;
    let m = Member::open(path)?;
    let buf = filled(MIB as usize, seed);
    for pos in (0..bytes).step_by(MIB as usize) {
        m.write_at(pos, buf.as_slice())?;
    }
    m.sync()?;
    Ok(m)
}

/// Removes the work directory however the run ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("raid-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), BoxError> {
    let opts = parse_opts();
    let work = opts
        .dir
        .join(format!("vessel-raid-bench.{}", std::process::id()));
    std::fs::create_dir(&work)?;
    let _cleanup = Cleanup(work.clone());
    let bytes = opts.member_mib * MIB;
    eprintln!(
        "preparing {} member and {} raw files of {} MiB in {}",
        opts.members,
        opts.members,
        opts.member_mib,
        work.display()
    );
    let mut members = Vec::new();
    let mut raw = Vec::new();
    for i in 0..opts.members {
        let p = work.join(format!("member{i}"));
        prefill(&p, bytes, i as u64)?;
        members.push(p);
        raw.push(prefill(
            &work.join(format!("raw{i}")),
            bytes,
            100 + i as u64,
        )?);
    }
    let direct = raw.iter().all(Member::is_direct) && Member::open(&members[0])?.is_direct();
    if !direct {
        eprintln!("O_DIRECT refused here: dropping the page cache before every read test");
    }
    let levels = opts.levels.clone();
    let raw_paths: Vec<PathBuf> = (0..opts.members)
        .map(|i| work.join(format!("raw{i}")))
        .collect();
    let hand = Hand::open(&raw_paths)?;
    let hand_reads = Hand::open(&members)?;
    let bench = Bench {
        opts,
        work,
        members,
        raw,
        hand,
        hand_reads,
        direct,
    };
    let mut res = Results::default();
    for level in levels {
        bench.run_level(level, &mut res)?;
    }
    let json = res.json(&bench.opts, direct);
    match &bench.opts.json {
        Some(p) => std::fs::write(p, &json)?,
        None => print!("{json}"),
    }
    println!();
    print!("{}", res.table());
    for n in &res.notes {
        println!("{n}");
    }
    println!(
        "O_DIRECT on members and raw files: {}; work dir {} removed",
        bench.direct,
        bench.work.display()
    );
    Ok(())
}
