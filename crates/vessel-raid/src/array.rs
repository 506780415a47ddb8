//! Creating and assembling arrays, and the state every operation shares.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use crate::bitmap::{Bitmap, BITMAP_BLOCK, BITMAP_OFFSET};
use crate::checksum::CsumCache;
use crate::error::{RaidError, Result};
use crate::io::{Ctx, RowLocks};
use crate::layout::{csum_size, Geometry, DATA_OFFSET};
use crate::member::{AlignedBuf, Member, MemberIo, IO_ALIGN};
use crate::superblock::{DecodeError, SlotState, Superblock, MAX_MEMBERS};
use crate::uring::{self, Req};
use crate::RaidLevel;

/// Default chunk size: 64 KiB, as md.
pub const DEFAULT_CHUNK: u64 = 64 * 1024;

/// How to create an array.
#[derive(Debug, Clone)]
pub struct RaidConfig {
    /// RAID level.
    pub level: RaidLevel,
    /// Chunk size in bytes: a power of two from 4 KiB to 64 MiB.
    pub chunk_size: u64,
    /// Data bytes to use on each member; by default all the smallest member offers.
    pub member_size: Option<u64>,
    /// Reuse members that carry a superblock of another pool.
    pub force: bool,
    /// How member files are reached (not recorded on them: given again at each open).
    pub member_io: MemberIo,
}

impl RaidConfig {
    /// A configuration with the default chunk size.
    pub fn new(level: RaidLevel) -> Self {
        RaidConfig {
            level,
            chunk_size: DEFAULT_CHUNK,
            member_size: None,
            force: false,
            member_io: MemberIo::Direct,
        }
    }

    /// Sets how member files are reached.
    pub fn member_io(mut self, io: MemberIo) -> Self {
        self.member_io = io;
        self
    }

    /// Sets the chunk size.
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// Sets the data bytes used on each member.
    pub fn member_size(mut self, bytes: u64) -> Self {
        self.member_size = Some(bytes);
        self
    }
}

/// Health of one member, for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Slot.
    pub index: usize,
    /// The file or device in the slot, if any.
    pub path: Option<PathBuf>,
    /// State of the slot.
    pub state: SlotState,
    /// For a rebuilding member: data bytes already rebuilt.
    pub rebuilt: u64,
    /// Blocks read from it whose checksum did not match, since assembly.
    pub checksum_errors: u64,
    /// Opened with `O_DIRECT` (a member over NBD, or one through the page cache, is not).
    pub direct: bool,
}

/// One member slot.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub member: Option<Arc<Member>>,
    pub state: SlotState,
    /// Member data bytes already valid on a rebuilding member.
    pub checkpoint: u64,
    /// A rebuilding member that was in this slot before (re-added): only the rows the
    /// write-intent bitmap marks are rebuilt, the rest it holds already. Not recorded on
    /// disk: a rebuild resumed after a restart rebuilds every row from its checkpoint.
    pub partial: bool,
}

/// The array's member table, behind a short-held lock. Member I/O never runs under it
/// (superblock writes, which record a change of this table, do).
#[derive(Debug)]
pub(crate) struct State {
    pub geo: Geometry,
    pub pool: Uuid,
    pub generation: u64,
    pub slots: Vec<Slot>,
    /// The error that last took a member out, for callers that must report it.
    pub last_io_error: Option<RaidError>,
    /// A member failed and the superblocks do not say so yet.
    pub failures_pending: bool,
    /// Blocks read whose checksum did not match, since assembly, per member.
    pub checksum_errors: Vec<u64>,
    /// Members failed whose failure the failure hook has not confirmed yet (writes are
    /// not acknowledged meanwhile).
    pub unconfirmed: Vec<usize>,
}

/// What the array's owner is told, before a write is acknowledged, when a member failed:
/// `Err` holds writes back (see [`RaidArray::on_member_failed`]).
pub type FailureHook = Box<dyn Fn(usize) -> std::result::Result<(), String> + Send + Sync>;

/// The failure hook, if one is set.
#[derive(Default)]
pub(crate) struct Hook(pub std::sync::OnceLock<FailureHook>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Hook(set)"
        } else {
            "Hook(none)"
        })
    }
}

/// The write-intent bitmap and the writes in flight in each region (whose bits a flush
/// must keep).
#[derive(Debug)]
pub(crate) struct Intents {
    pub bitmap: Bitmap,
    pub inflight: HashMap<u64, u32>,
    /// When idle bits were last cleared.
    pub last_clear: std::time::Instant,
}

/// A RAID array presented as one block device.
///
/// One array is shared between threads. Requests on different rows run concurrently and
/// the member I/Os of each run in parallel; requests touching the same rows take turns
/// (a row lock), which keeps stripe updates atomic with respect to each other.
#[derive(Debug)]
pub struct RaidArray {
    pub(crate) geo: Geometry,
    pub(crate) pool: Uuid,
    pub(crate) state: Mutex<State>,
    pub(crate) intents: Mutex<Intents>,
    pub(crate) csums: CsumCache,
    pub(crate) rows: RowLocks,
    pub(crate) failure_hook: Hook,
    /// How members are opened, also ones added later.
    pub(crate) member_io: MemberIo,
}

fn check_shape(level: RaidLevel, count: usize, chunk: u64) -> Result<()> {
    if count < level.min_members() {
        return Err(RaidError::MemberCount {
            level,
            count,
            min: level.min_members(),
        });
    }
    if count > MAX_MEMBERS {
        return Err(RaidError::TooManyMembers {
            count,
            max: MAX_MEMBERS,
        });
    }
    if !chunk.is_power_of_two() || !(IO_ALIGN as u64..=64 << 20).contains(&chunk) {
        return Err(RaidError::ChunkSize(chunk));
    }
    Ok(())
}

fn check_distinct(paths: &[PathBuf]) -> Result<()> {
    let mut seen = HashMap::new();
    for p in paths {
        let key = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        if seen.insert(key, ()).is_some() {
            return Err(RaidError::DuplicateMember { path: p.clone() });
        }
    }
    Ok(())
}

impl RaidArray {
    /// Creates a new array over `paths` (in slot order), writing a superblock on each
    /// member and syncing parity. Every check runs before anything is written.
    pub fn create<P: AsRef<Path>>(paths: &[P], config: &RaidConfig) -> Result<Self> {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        check_shape(config.level, paths.len(), config.chunk_size)?;
        check_distinct(&paths)?;
        let members = paths
            .iter()
            .map(|p| Member::open_with(p, config.member_io))
            .collect::<Result<Vec<_>>>()?;
        if !config.force {
            for m in &members {
                if let Ok(sb) = m.read_superblock()? {
                    return Err(RaidError::MemberInUse {
                        path: m.path().to_path_buf(),
                        pool: sb.pool,
                    });
                }
            }
        }
        let chunk = config.chunk_size;
        let smallest = members.iter().map(Member::size).min().unwrap_or(0);
        let wanted = config
            .member_size
            .unwrap_or_else(|| smallest.saturating_sub(DATA_OFFSET));
        let mut data_size = wanted / chunk * chunk;
        if config.member_size.is_none() {
            // Leave room for the checksum area behind the data.
            while data_size > chunk && DATA_OFFSET + data_size + csum_size(data_size) > smallest {
                data_size -= chunk;
            }
        }
        let needed = DATA_OFFSET + data_size.max(chunk) + csum_size(data_size.max(chunk));
        for m in &members {
            if m.size() < needed {
                return Err(RaidError::MemberTooSmall {
                    path: m.path().to_path_buf(),
                    size: m.size(),
                    needed,
                });
            }
        }
        let geo = Geometry {
            level: config.level,
            members: members.len(),
            chunk,
            data_size,
        };
        // The whole array starts dirty, so an interrupted initial sync resumes at assembly.
        let mut bitmap = Bitmap::new(geo.rows(), chunk);
        bitmap.set_all();
        let slots = members
            .into_iter()
            .map(|m| Slot {
                member: Some(Arc::new(m)),
                state: SlotState::Active,
                checkpoint: 0,
                partial: false,
            })
            .collect();
        let array = RaidArray::assemble(geo, Uuid::new_v4(), 0, slots, bitmap, config.member_io);
        // Bitmap before superblocks: a member that looks like ours must never carry
        // a bitmap left over from its previous life.
        array.write_bitmap_all()?;
        array.lock().write_superblocks()?;
        Ctx::for_pass(&array).resync_marked()?;
        // The initial sync wrote through the page cache (its reads went past it) and
        // synced: nobody's data is cached yet, so what it left there only makes later small
        // writes dearer.
        let members: Vec<Arc<Member>> = array
            .lock()
            .slots
            .iter()
            .filter_map(|s| s.member.clone())
            .collect();
        for m in members {
            m.drop_cached();
        }
        tracing::info!(pool = %array.pool, level = %geo.level, members = geo.members, size = geo.size(), "RAID array created");
        Ok(array)
    }

    /// Assembles an existing array from all its members, in slot order.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        let slots: Vec<Option<PathBuf>> = paths
            .iter()
            .map(|p| Some(p.as_ref().to_path_buf()))
            .collect();
        Self::open_degraded(&slots)
    }

    /// Assembles an existing array where some slots have no member (`None`).
    pub fn open_degraded(paths: &[Option<PathBuf>]) -> Result<Self> {
        Self::open_with(paths, MemberIo::Direct)
    }

    /// [`RaidArray::open_degraded`], reaching the members the way `io` says.
    pub fn open_with(paths: &[Option<PathBuf>], io: MemberIo) -> Result<Self> {
        let present: Vec<PathBuf> = paths.iter().flatten().cloned().collect();
        check_distinct(&present)?;
        let mut found: Vec<Option<(Member, Superblock)>> = Vec::new();
        // A member whose superblock is damaged is assembled around as if it were missing,
        // so that a redundant array comes up degraded and the member can be replaced; only
        // if no member is left is the first such error returned.
        let mut unreadable = None;
        for p in paths {
            let Some(p) = p else {
                found.push(None);
                continue;
            };
            let m = Member::open_with(p, io)?;
            let sb = match m.read_superblock()? {
                Ok(sb) => sb,
                // No magic at all: not a member (a wrong path, most likely); refused.
                Err(DecodeError::Magic) => return Err(RaidError::NotAMember { path: p.clone() }),
                Err(e @ (DecodeError::Field | DecodeError::Checksum)) => {
                    tracing::warn!(path = %p.display(), error = ?e, "member superblock damaged; assembling without it");
                    unreadable.get_or_insert(RaidError::SuperblockChecksum { path: p.clone() });
                    found.push(None);
                    continue;
                }
                Err(DecodeError::Version(version)) => {
                    return Err(RaidError::SuperblockVersion {
                        path: p.clone(),
                        version,
                        supported: crate::superblock::VERSION,
                    })
                }
            };
            found.push(Some((m, sb)));
        }
        // The pool most members agree on is the one being assembled.
        let mut votes: Vec<(Uuid, usize)> = Vec::new();
        for (_, sb) in found.iter().flatten() {
            match votes.iter_mut().find(|(u, _)| *u == sb.pool) {
                Some(v) => v.1 += 1,
                None => votes.push((sb.pool, 1)),
            }
        }
        let pool = votes
            .iter()
            .fold(None::<(Uuid, usize)>, |best, v| match best {
                Some(b) if b.1 >= v.1 => Some(b),
                _ => Some(*v),
            })
            .map(|v| v.0);
        let pool = match pool {
            Some(p) => p,
            None => return Err(unreadable.take().unwrap_or(RaidError::NoMembers)),
        };
        // Of those, the geometry most members record, and of the members recording it the
        // newest generation, describe the array.
        let shape = |sb: &Superblock| (sb.level, sb.members, sb.chunk_size, sb.data_size);
        let ours: Vec<&Superblock> = found
            .iter()
            .flatten()
            .map(|(_, sb)| sb)
            .filter(|sb| sb.pool == pool)
            .collect();
        let majority = ours
            .iter()
            .map(|sb| shape(sb))
            .max_by_key(|s| ours.iter().filter(|o| shape(o) == *s).count());
        let newest = ours
            .iter()
            .filter(|sb| Some(shape(sb)) == majority)
            .max_by_key(|sb| sb.generation)
            .map(|sb| (*sb).clone())
            .ok_or(RaidError::NoMembers)?;
        check_shape(newest.level, paths.len(), newest.chunk_size)?;
        // Around a damaged superblock only when what is left can be trusted to be current:
        // two members at the newest generation (a lone survivor could be a member that
        // dropped out long ago, its superblock never told), and no more members out than
        // the level survives. Otherwise nothing is written and the damage is reported.
        if let Some(e) = unreadable {
            let at_newest = ours
                .iter()
                .filter(|sb| sb.generation == newest.generation)
                .count();
            let out = (0..paths.len())
                .filter(|&i| found[i].is_none() || newest.states.get(i) != Some(&SlotState::Active))
                .count();
            if at_newest < 2 || out > newest.level.tolerated_failures(paths.len()) {
                return Err(e);
            }
        }
        let geo = Geometry {
            level: newest.level,
            members: newest.members as usize,
            chunk: newest.chunk_size,
            data_size: newest.data_size,
        };
        for (slot, entry) in found.iter().enumerate() {
            let Some((m, sb)) = entry else { continue };
            let path = m.path().to_path_buf();
            if sb.pool != pool {
                return Err(RaidError::ForeignMember {
                    path,
                    expected: pool,
                    found: sb.pool,
                });
            }
            let checks: [(&'static str, u64, u64); 4] = [
                ("member count", geo.members as u64, u64::from(sb.members)),
                (
                    "level",
                    u64::from(geo.level.code()),
                    u64::from(sb.level.code()),
                ),
                ("chunk size", geo.chunk, sb.chunk_size),
                ("data size", geo.data_size, sb.data_size),
            ];
            for (what, expected, found) in checks {
                if expected != found {
                    return Err(RaidError::Geometry {
                        path,
                        what,
                        expected,
                        found,
                    });
                }
            }
            if sb.index as usize != slot {
                return Err(RaidError::WrongSlot {
                    path,
                    expected: slot,
                    found: sb.index as usize,
                });
            }
            let needed = geo.member_bytes();
            let failed = newest.states.get(slot) == Some(&SlotState::Failed);
            if m.size() < needed && !failed {
                return Err(RaidError::MemberTooSmall {
                    path,
                    size: m.size(),
                    needed,
                });
            }
        }
        if paths.len() != geo.members {
            return Err(RaidError::MemberCount {
                level: geo.level,
                count: paths.len(),
                min: geo.members,
            });
        }
        let mut bitmap = Bitmap::new(geo.rows(), geo.chunk);
        let mut slots = Vec::new();
        for (i, entry) in found.into_iter().enumerate() {
            let state = newest.states.get(i).copied().unwrap_or(SlotState::Failed);
            let checkpoint = newest.checkpoints.get(i).copied().unwrap_or(0);
            match entry {
                Some((m, _)) if state != SlotState::Failed => {
                    if state == SlotState::Active {
                        let mut b = AlignedBuf::new(bitmap.byte_len());
                        m.read_at(BITMAP_OFFSET, b.as_mut_slice())?;
                        bitmap.merge(b.as_slice());
                    }
                    slots.push(Slot {
                        member: Some(Arc::new(m)),
                        state,
                        checkpoint,
                        partial: false,
                    });
                }
                _ => slots.push(Slot {
                    member: None,
                    state: SlotState::Failed,
                    checkpoint: 0,
                    partial: false,
                }),
            }
        }
        let array = RaidArray::assemble(geo, pool, newest.generation, slots, bitmap, io);
        array.lock().write_superblocks()?;
        let dirty = !array.intents().bitmap.marked_rows(geo.rows()).is_empty();
        if dirty {
            tracing::warn!(pool = %pool, "array was not shut down cleanly; resyncing dirty regions");
            Ctx::for_pass(&array).resync_marked()?;
        }
        tracing::info!(pool = %pool, level = %geo.level, "RAID array assembled");
        Ok(array)
    }

    fn assemble(
        geo: Geometry,
        pool: Uuid,
        generation: u64,
        slots: Vec<Slot>,
        bitmap: Bitmap,
        member_io: MemberIo,
    ) -> Self {
        RaidArray {
            geo,
            pool,
            state: Mutex::new(State {
                geo,
                pool,
                generation,
                slots,
                last_io_error: None,
                failures_pending: false,
                checksum_errors: vec![0; geo.members],
                unconfirmed: Vec::new(),
            }),
            intents: Mutex::new(Intents {
                bitmap,
                inflight: HashMap::new(),
                last_clear: std::time::Instant::now(),
            }),
            csums: CsumCache::new(geo),
            rows: RowLocks::default(),
            failure_hook: Hook::default(),
            member_io,
        }
    }

    /// The member table.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The write-intent bitmap.
    pub(crate) fn intents(&self) -> MutexGuard<'_, Intents> {
        self.intents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool identity recorded on every member.
    pub fn pool_id(&self) -> Uuid {
        self.pool
    }

    /// The array's shape.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// Bytes the array presents.
    pub fn size(&self) -> u64 {
        self.geo.size()
    }

    /// State of every member slot.
    pub fn status(&self) -> Vec<MemberStatus> {
        let inner = self.lock();
        inner
            .slots
            .iter()
            .enumerate()
            .map(|(index, s)| MemberStatus {
                index,
                path: s.member.as_ref().map(|m| m.path().to_path_buf()),
                state: s.state,
                rebuilt: if s.state == SlotState::Active {
                    inner.geo.data_size
                } else {
                    s.checkpoint
                },
                checksum_errors: inner.checksum_errors.get(index).copied().unwrap_or(0),
                direct: s.member.as_ref().is_some_and(|m| m.is_direct()),
            })
            .collect()
    }

    /// Blocks whose checksum did not match when read, since assembly (each one was read
    /// around and rewritten from the redundancy where the level has any).
    pub fn checksum_errors(&self) -> u64 {
        self.lock().checksum_errors.iter().sum()
    }

    /// Whether more members are out (failed, missing or not yet rebuilt) than the level
    /// survives: its data cannot be served.
    pub fn is_unavailable(&self) -> bool {
        let inner = self.lock();
        let out = inner
            .slots
            .iter()
            .filter(|s| s.state != SlotState::Active)
            .count();
        out > inner.geo.level.tolerated_failures(inner.slots.len())
    }

    /// Whether any member is missing or being rebuilt.
    pub fn is_degraded(&self) -> bool {
        self.lock()
            .slots
            .iter()
            .any(|s| s.state != SlotState::Active)
    }

    /// Takes a member out of service, as if its disk had died, and records that on the
    /// others. Reads reconstruct its data; data is lost if the level tolerates no more.
    /// Refused if the level could not serve its data without it (see
    /// [`RaidArray::fail_member_forced`]).
    pub fn fail_member(&self, index: usize) -> Result<()> {
        self.fail_member_with(index, false)
    }

    /// Like [`RaidArray::fail_member`], also beyond what the level survives (to test that
    /// reads then fail with EIO and never return zeros).
    pub fn fail_member_forced(&self, index: usize) -> Result<()> {
        self.fail_member_with(index, true)
    }

    fn fail_member_with(&self, index: usize, force: bool) -> Result<()> {
        let mut inner = self.lock();
        let members = inner.slots.len();
        if index >= members {
            return Err(RaidError::NoSuchMember {
                index,
                count: members,
            });
        }
        let failed = (0..members)
            .filter(|&m| m == index || inner.slots[m].state != SlotState::Active)
            .count();
        let tolerated = inner.geo.level.tolerated_failures(members);
        if failed > tolerated && !force {
            return Err(RaidError::TooManyFailures {
                index,
                failed,
                members,
                tolerated,
                level: inner.geo.level,
            });
        }
        // The member itself is told too (if it still answers), so that a restart does not
        // take it back, even when it was the last one.
        let member = inner.slots[index].member.clone();
        inner.fail(index);
        inner.write_superblocks()?;
        if let Some(m) = &member {
            let sb = inner.superblock(index);
            if let Err(e) = m.write_superblock(&sb) {
                tracing::warn!(member = index, error = %e, "recording its failure on the failed member");
            }
        }
        drop(inner);
        if let Some(m) = member {
            self.csums.forget(m.id());
        }
        Ok(())
    }
}

impl Drop for RaidArray {
    /// A clean close: checksums written back, members synced, write-intent bitmap cleared,
    /// so the next assembly has nothing to resync.
    fn drop(&mut self) {
        if let Err(e) = self.flush_with(true) {
            tracing::debug!(pool = %self.pool, error = %e, "array closed without a final flush");
        }
    }
}

impl State {
    /// The superblock for slot `index` at the current generation.
    pub fn superblock(&self, index: usize) -> Superblock {
        Superblock {
            pool: self.pool,
            index: index as u32,
            level: self.geo.level,
            members: self.geo.members as u32,
            chunk_size: self.geo.chunk,
            data_size: self.geo.data_size,
            generation: self.generation,
            clean: true,
            states: self.slots.iter().map(|s| s.state).collect(),
            checkpoints: self.slots.iter().map(|s| s.checkpoint).collect(),
        }
    }

    /// Whether member `m` may be written.
    pub fn writable(&self, m: usize) -> bool {
        self.slots[m].member.is_some() && self.slots[m].state != SlotState::Failed
    }

    /// Marks a member failed and closes it (once the I/O still using it is done). The
    /// caller drops its cached checksums ([`CsumCache::forget`]) once this lock is
    /// released.
    pub fn fail(&mut self, m: usize) {
        if self.slots[m].state != SlotState::Failed {
            tracing::warn!(pool = %self.pool, member = m, "member failed");
            self.failures_pending = true;
            if !self.unconfirmed.contains(&m) {
                self.unconfirmed.push(m);
            }
        }
        if let Some(member) = &self.slots[m].member {
            member.mark_failed();
        }
        self.slots[m].state = SlotState::Failed;
        self.slots[m].member = None;
        self.slots[m].checkpoint = 0;
        self.slots[m].partial = false;
    }

    /// That slot `index` exists and is failed (what replacing or re-adding a member needs).
    pub fn failed_slot(&self, index: usize) -> Result<()> {
        let count = self.slots.len();
        let slot = self
            .slots
            .get(index)
            .ok_or(RaidError::NoSuchMember { index, count })?;
        if slot.state != SlotState::Failed {
            return Err(RaidError::MemberNotFailed {
                index,
                state: slot.state.name(),
            });
        }
        Ok(())
    }

    /// Whether every slot holds an active member (the write-intent bitmap may forget
    /// regions only then: while a member is out or coming back, its bits say what it
    /// missed).
    pub fn is_whole(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.state == SlotState::Active && s.member.is_some())
    }

    /// Bumps the generation and writes the superblock to every live member (in
    /// parallel); a member that refuses is failed.
    pub fn write_superblocks(&mut self) -> Result<()> {
        self.failures_pending = false;
        self.generation += 1;
        let live: Vec<(usize, Arc<Member>, Vec<u8>)> = (0..self.slots.len())
            .filter(|&i| self.writable(i))
            .filter_map(|i| {
                let m = self.slots[i].member.clone()?;
                Some((i, m, self.superblock(i).encode()))
            })
            .collect();
        let mut reqs: Vec<Req<'_>> = live.iter().map(|(_, m, sb)| Req::write(m, 0, sb)).collect();
        let written = uring::run(&mut reqs);
        let mut syncs: Vec<Req<'_>> = live.iter().map(|(_, m, _)| Req::sync(m)).collect();
        let synced = uring::run(&mut syncs);
        drop((reqs, syncs));
        for ((i, _, _), res) in live.iter().zip(written.into_iter().zip(synced)) {
            if let Err(e) = res.0.and(res.1) {
                tracing::warn!(member = i, error = %e, "superblock write failed");
                self.last_io_error = Some(e);
                self.fail(*i);
            }
        }
        Ok(())
    }

    /// The members that may be written, by slot.
    pub fn live_members(&self) -> Vec<(usize, Arc<Member>)> {
        (0..self.slots.len())
            .filter(|&i| self.writable(i))
            .filter_map(|i| Some((i, self.slots[i].member.clone()?)))
            .collect()
    }
}

impl RaidArray {
    /// Writes bitmap blocks to every live member and syncs them, in parallel; a member
    /// that refuses is failed (and recorded before this returns).
    pub(crate) fn write_bitmap_blocks(&self, bitmap: &Bitmap, blocks: &[usize]) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let live = self.lock().live_members();
        let mut reqs = Vec::new();
        let mut owner = Vec::new();
        for (i, m) in &live {
            for &b in blocks {
                let off = BITMAP_OFFSET + (b * BITMAP_BLOCK) as u64;
                reqs.push(Req::write(m, off, bitmap.block(b)));
                owner.push(*i);
            }
        }
        let mut failed: Vec<(usize, RaidError)> = Vec::new();
        for (i, res) in owner.iter().zip(uring::run(&mut reqs)) {
            if let Err(e) = res {
                failed.push((*i, e));
            }
        }
        drop(reqs);
        let mut syncs: Vec<Req<'_>> = live.iter().map(|(_, m)| Req::sync(m)).collect();
        for ((i, _), res) in live.iter().zip(uring::run(&mut syncs)) {
            if let Err(e) = res {
                failed.push((*i, e));
            }
        }
        drop(syncs);
        if failed.is_empty() {
            return Ok(());
        }
        let mut state = self.lock();
        for (i, e) in failed {
            let same = state.slots[i]
                .member
                .as_ref()
                .zip(live.iter().find(|(j, _)| *j == i))
                .is_some_and(|(a, (_, b))| Arc::ptr_eq(a, b));
            if same {
                state.last_io_error = Some(e);
                state.fail(i);
                if let Some((_, m)) = live.iter().find(|(j, _)| *j == i) {
                    self.csums.forget(m.id());
                }
            }
        }
        state.write_superblocks()
    }

    /// Writes the whole bitmap to every live member.
    pub(crate) fn write_bitmap_all(&self) -> Result<()> {
        let intents = self.intents();
        let blocks: Vec<usize> = (0..intents.bitmap.byte_len() / BITMAP_BLOCK).collect();
        self.write_bitmap_blocks(&intents.bitmap, &blocks)
    }
}
