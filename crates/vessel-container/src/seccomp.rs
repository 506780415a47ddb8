//! Seccomp: translates the spec's `linux.seccomp` into a classic BPF program and loads it.
//!
//! The program is generated here rather than with seccompiler's `SeccompFilter`, which has one
//! match action per filter, while OCI profiles give every rule its own action and errno. Rules
//! are checked in spec order and the first match decides (libseccomp resolves overlapping
//! rules the same way in practice: profiles list alternatives for one syscall with one action).
//!
//! The program checks the audit architecture first and has one section per ABI, each with
//! the syscall numbers of that ABI: x86_64 always (the native one), and i386 and x32 when the
//! profile's `architectures` lists `SCMP_ARCH_X86` and `SCMP_ARCH_X32` (podman's and Docker's
//! default profiles do, so 32-bit programs run). A name unknown to an ABI is skipped there,
//! since profiles list the syscalls of every architecture. Syscalls of an ABI not listed are
//! killed: their numbers mean other syscalls, so letting them through would bypass the filter.
use std::collections::HashMap;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::error::{Error, Result};
use crate::syscall_table::SYSCALLS_X86_64;
use crate::syscall_table_i386::SYSCALLS_I386;
use crate::syscall_table_x32::SYSCALLS_X32;

/// BPF_LD | BPF_W | BPF_ABS.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGT_K: u16 = 0x05 | 0x20;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_ALU_AND_K: u16 = 0x04 | 0x50;
const BPF_RET_K: u16 = 0x06;

const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const MAX_INSNS: usize = 4096;

/// A compiled filter, ready to load.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

/// A syscall ABI of x86 Linux, each with its own numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abi {
    /// The native 64-bit ABI (audit arch x86_64).
    X86_64,
    /// 32-bit programs (`int $0x80`, audit arch i386).
    I386,
    /// 32-bit pointers on the 64-bit ABI (audit arch x86_64, numbers with bit 30 set).
    X32,
}

impl Abi {
    fn table(self) -> &'static [(&'static str, i64)] {
        match self {
            Abi::X86_64 => SYSCALLS_X86_64,
            Abi::I386 => SYSCALLS_I386,
            Abi::X32 => SYSCALLS_X32,
        }
    }

    /// The number the kernel shows the filter for syscall `name` in this ABI.
    pub(crate) fn number(self, name: &str) -> Option<u32> {
        let nr = self.table().iter().find(|(n, _)| *n == name)?.1;
        let nr = u32::try_from(nr).ok()?;
        Some(if self == Abi::X32 {
            nr | X32_SYSCALL_BIT
        } else {
            nr
        })
    }
}

/// The x86_64 number of a syscall name.
#[cfg(test)]
pub(crate) fn syscall_number(name: &str) -> Option<i64> {
    Abi::X86_64.number(name).map(i64::from)
}

/// The ABIs the profile allows: x86_64 always (libseccomp always has the native one), i386
/// and x32 when listed. Other architectures cannot run here and are ignored.
fn abis(seccomp: &LinuxSeccomp) -> Vec<Abi> {
    let listed = seccomp.architectures().as_deref().unwrap_or(&[]);
    let mut out = vec![Abi::X86_64];
    for (arch, abi) in [
        (Arch::ScmpArchX86, Abi::I386),
        (Arch::ScmpArchX32, Abi::X32),
    ] {
        if listed.contains(&arch) {
            out.push(abi);
        }
    }
    out
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32> {
    let data = errno.unwrap_or(libc::EPERM as u32) & 0xffff;
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | data,
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | data,
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp(
                "SCMP_ACT_NOTIFY (seccomp user notification) is not supported".into(),
            ))
        }
    })
}

/// Jump target of a conditional instruction inside a rule.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The next instruction.
    Next,
    /// The end of the current condition (it holds).
    Pass,
    /// The end of the rule (a condition does not hold).
    Fail,
}

#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u16,
    k: u32,
    jt: Target,
    jf: Target,
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        k,
        jt: Target::Next,
        jf: Target::Next,
    }
}

fn jump(code: u16, k: u32, jt: Target, jf: Target) -> Insn {
    Insn { code, k, jt, jf }
}

fn raw(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Instructions testing one argument condition; they end at `Pass` or jump to `Fail`.
fn condition(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
) -> Result<Vec<Insn>> {
    if index > 5 {
        return Err(Error::Seccomp(format!(
            "argument index {index} is out of range 0-5"
        )));
    }
    let lo_off = OFFSET_ARGS + 8 * index as u32;
    let hi_off = lo_off + 4;
    let (hi, lo) = ((value >> 32) as u32, value as u32);
    use Target::{Fail, Next, Pass};
    let ld_hi = stmt(BPF_LD_W_ABS, hi_off);
    let ld_lo = stmt(BPF_LD_W_ABS, lo_off);
    Ok(match op {
        LinuxSeccompOperator::ScmpCmpEq => vec![
            ld_hi,
            jump(BPF_JMP_JEQ_K, hi, Next, Fail),
            ld_lo,
            jump(BPF_JMP_JEQ_K, lo, Pass, Fail),
        ],
        LinuxSeccompOperator::ScmpCmpNe => vec![
            ld_hi,
            jump(BPF_JMP_JEQ_K, hi, Next, Pass),
            ld_lo,
            jump(BPF_JMP_JEQ_K, lo, Fail, Pass),
        ],
        LinuxSeccompOperator::ScmpCmpGt => vec![
            ld_hi,
            jump(BPF_JMP_JGT_K, hi, Pass, Next),
            jump(BPF_JMP_JEQ_K, hi, Next, Fail),
            ld_lo,
            jump(BPF_JMP_JGT_K, lo, Pass, Fail),
        ],
        LinuxSeccompOperator::ScmpCmpGe => vec![
            ld_hi,
            jump(BPF_JMP_JGT_K, hi, Pass, Next),
            jump(BPF_JMP_JEQ_K, hi, Next, Fail),
            ld_lo,
            jump(BPF_JMP_JGE_K, lo, Pass, Fail),
        ],
        LinuxSeccompOperator::ScmpCmpLt => vec![
            ld_hi,
            jump(BPF_JMP_JGT_K, hi, Fail, Next),
            jump(BPF_JMP_JEQ_K, hi, Next, Pass),
            ld_lo,
            jump(BPF_JMP_JGE_K, lo, Fail, Pass),
        ],
        LinuxSeccompOperator::ScmpCmpLe => vec![
            ld_hi,
            jump(BPF_JMP_JGT_K, hi, Fail, Next),
            jump(BPF_JMP_JEQ_K, hi, Next, Pass),
            ld_lo,
            jump(BPF_JMP_JGT_K, lo, Fail, Pass),
        ],
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            // OCI and libseccomp: (arg & value) == valueTwo.
            let (mhi, mlo) = ((value >> 32) as u32, value as u32);
            let (dhi, dlo) = ((value_two >> 32) as u32, value_two as u32);
            vec![
                ld_hi,
                stmt(BPF_ALU_AND_K, mhi),
                jump(BPF_JMP_JEQ_K, dhi, Next, Fail),
                ld_lo,
                stmt(BPF_ALU_AND_K, mlo),
                jump(BPF_JMP_JEQ_K, dlo, Pass, Fail),
            ]
        }
    })
}

/// One rule: all conditions, then the action. Falls through to the next rule on mismatch.
fn rule(conditions: &[Vec<Insn>], ret: u32) -> Result<Vec<libc::sock_filter>> {
    let total: usize = conditions.iter().map(Vec::len).sum::<usize>() + 1;
    let mut out = Vec::with_capacity(total);
    let mut pos = 0usize;
    for cond in conditions {
        let end = pos + cond.len();
        for ins in cond {
            let off = |t: Target| -> Result<u8> {
                let o = match t {
                    Target::Next => 0,
                    Target::Pass => end - pos - 1,
                    Target::Fail => total - pos - 1,
                };
                u8::try_from(o).map_err(|_| Error::Seccomp("rule has too many conditions".into()))
            };
            out.push(raw(ins.code, ins.k, off(ins.jt)?, off(ins.jf)?));
            pos += 1;
        }
    }
    out.push(raw(BPF_RET_K, ret, 0, 0));
    Ok(out)
}

/// One rule as written in the profile: the syscall names, the argument conditions and the
/// return value.
struct SpecRule<'a> {
    names: &'a [String],
    conditions: Vec<Vec<Insn>>,
    ret: u32,
}

/// Most syscall numbers one jump instruction table may hold (jump offsets are 8 bits).
const GROUP: usize = 250;

/// The instructions deciding a syscall of one ABI (the accumulator holds its number): the
/// rules of the syscalls named in the profile, then `default`. Every path ends in a return.
fn section(abi: Abi, rules: &[SpecRule<'_>], default: u32) -> Result<Vec<libc::sock_filter>> {
    // Rules per syscall number, in order of first appearance.
    let mut order: Vec<u32> = Vec::new();
    let mut per_nr: HashMap<u32, Vec<&SpecRule<'_>>> = HashMap::new();
    for r in rules {
        for name in r.names {
            let Some(nr) = abi.number(name) else {
                tracing::debug!(syscall = %name, ?abi, "unknown in this ABI; skipped");
                continue;
            };
            let entry = per_nr.entry(nr).or_default();
            if entry.is_empty() {
                order.push(nr);
            }
            entry.push(r);
        }
    }
    // Syscalls whose first rule has no condition just return a value: one jump table per
    // value. The others get their rules in order.
    let mut plain: Vec<(u32, Vec<u32>)> = Vec::new();
    let mut out = Vec::new();
    for nr in order {
        let list = &per_nr[&nr];
        if list[0].conditions.is_empty() && list[0].ret == default {
            continue; // decided by the default at the end
        }
        if list[0].conditions.is_empty() {
            match plain.iter_mut().find(|(ret, _)| *ret == list[0].ret) {
                Some((_, nrs)) => nrs.push(nr),
                None => plain.push((list[0].ret, vec![nr])),
            }
            continue;
        }
        let mut body = Vec::new();
        let mut unconditional = false;
        for r in list {
            body.extend(rule(&r.conditions, r.ret)?);
            if r.conditions.is_empty() {
                unconditional = true;
                break; // later rules are unreachable
            }
        }
        if !unconditional {
            // The accumulator holds an argument now, not the number: end here.
            body.push(raw(BPF_RET_K, default, 0, 0));
        }
        out.push(raw(BPF_JMP_JEQ_K, nr, 1, 0));
        out.push(raw(BPF_JMP_JA, body.len() as u32, 0, 0));
        out.extend(body);
    }
    for (ret, nrs) in plain {
        for chunk in nrs.chunks(GROUP) {
            let k = chunk.len();
            for (i, nr) in chunk.iter().enumerate() {
                // To the return below the `ja`.
                out.push(raw(BPF_JMP_JEQ_K, *nr, (k - i) as u8, 0));
            }
            out.push(raw(BPF_JMP_JA, 1, 0, 0));
            out.push(raw(BPF_RET_K, ret, 0, 0));
        }
    }
    out.push(raw(BPF_RET_K, default, 0, 0));
    Ok(out)
}

/// Compiles the spec's seccomp section.
pub(crate) fn compile(seccomp: &LinuxSeccomp) -> Result<Filter> {
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut rules = Vec::new();
    for sc in seccomp.syscalls().as_deref().unwrap_or(&[]) {
        let ret = action(sc.action(), sc.errno_ret())?;
        let mut conditions = Vec::new();
        for arg in sc.args().as_deref().unwrap_or(&[]) {
            conditions.push(condition(
                arg.index(),
                arg.op(),
                arg.value(),
                arg.value_two().unwrap_or(0),
            )?);
        }
        rules.push(SpecRule {
            names: sc.names(),
            conditions,
            ret,
        });
    }
    let abis = abis(seccomp);
    let x86_64 = section(Abi::X86_64, &rules, default)?;
    let x32 = if abis.contains(&Abi::X32) {
        Some(section(Abi::X32, &rules, default)?)
    } else {
        None
    };
    let i386 = if abis.contains(&Abi::I386) {
        Some(section(Abi::I386, &rules, default)?)
    } else {
        None
    };
    // Layout: the arch dispatch, the x86_64 section (which sends x32 numbers on to the x32
    // section, or kills them), the x32 section, the i386 section. `ja k` skips k instructions.
    let mut prog = vec![raw(BPF_LD_W_ABS, OFFSET_ARCH, 0, 0)];
    let dispatch_len = 3 + if i386.is_some() { 2 } else { 0 };
    let x86_64_start = dispatch_len + 1; // after the load of the arch
    let x86_64_len = 3 + x86_64.len();
    let x32_start = x86_64_start + x86_64_len;
    let i386_start = x32_start + x32.as_ref().map_or(0, Vec::len);
    prog.push(raw(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 0, 1));
    prog.push(raw(
        BPF_JMP_JA,
        (x86_64_start - prog.len() - 1) as u32,
        0,
        0,
    ));
    if i386.is_some() {
        prog.push(raw(BPF_JMP_JEQ_K, AUDIT_ARCH_I386, 0, 1));
        prog.push(raw(BPF_JMP_JA, (i386_start - prog.len() - 1) as u32, 0, 0));
    }
    prog.push(raw(BPF_RET_K, RET_KILL_PROCESS, 0, 0));
    debug_assert_eq!(prog.len(), x86_64_start);
    prog.push(raw(BPF_LD_W_ABS, OFFSET_NR, 0, 0));
    prog.push(raw(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1));
    match &x32 {
        // The accumulator keeps the number across the jump.
        Some(_) => prog.push(raw(BPF_JMP_JA, (x32_start - prog.len() - 1) as u32, 0, 0)),
        None => prog.push(raw(BPF_RET_K, RET_KILL_PROCESS, 0, 0)),
    }
    prog.extend(x86_64);
    if let Some(x32) = x32 {
        prog.extend(x32);
    }
    if let Some(i386) = i386 {
        prog.push(raw(BPF_LD_W_ABS, OFFSET_NR, 0, 0));
        prog.extend(i386);
    }
    if prog.len() > MAX_INSNS {
        return Err(Error::Seccomp(format!(
            "the profile compiles to {} BPF instructions, more than the kernel's {MAX_INSNS}",
            prog.len()
        )));
    }
    let mut flags: libc::c_ulong = 0;
    for f in seccomp.flags().as_deref().unwrap_or(&[]) {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
        };
    }
    Ok(Filter {
        program: prog,
        flags,
    })
}

impl Filter {
    /// Loads the filter into the calling thread. Without no_new_privs this needs CAP_SYS_ADMIN,
    /// so callers load it before dropping capabilities in that case.
    pub(crate) fn load(&self) -> Result<()> {
        let prog = libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `self.program`, which outlives the call; the kernel copies
        // the program and does not keep the pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(Error::Seccomp(format!(
                "loading the filter failed: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// Number of BPF instructions.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.program.len()
    }

    /// Runs the program on a syscall, like the kernel does (for tests).
    #[cfg(test)]
    fn run(&self, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u32; 16];
        data[0] = nr;
        data[1] = arch;
        for (i, a) in args.iter().enumerate() {
            data[4 + 2 * i] = *a as u32;
            data[5 + 2 * i] = (*a >> 32) as u32;
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let ins = &self.program[pc];
            pc += 1;
            match ins.code {
                BPF_LD_W_ABS => acc = data[(ins.k / 4) as usize],
                BPF_ALU_AND_K => acc &= ins.k,
                BPF_RET_K => return ins.k,
                BPF_JMP_JA => pc += ins.k as usize,
                c => {
                    let hit = match c {
                        BPF_JMP_JEQ_K => acc == ins.k,
                        BPF_JMP_JGT_K => acc > ins.k,
                        BPF_JMP_JGE_K => acc >= ins.k,
                        _ => panic!("unexpected opcode {c:#x}"),
                    };
                    pc += if hit { ins.jt } else { ins.jf } as usize;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    const X86_64: u32 = AUDIT_ARCH_X86_64;

    #[test]
    fn names_resolve() {
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("swapoff"), Some(168));
        assert_eq!(syscall_number("no_such_call"), None);
    }

    #[test]
    fn denylist_with_errno_and_unknown_names() {
        let f = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["swapoff","not_on_x86"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                {"names":["bpf"],"action":"SCMP_ACT_ERRNO"},
                {"names":["reboot"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
        ))
        .unwrap();
        assert_eq!(f.run(X86_64, 168, [0; 6]), RET_ERRNO | 1);
        assert_eq!(f.run(X86_64, 321, [0; 6]), RET_ERRNO | libc::EPERM as u32);
        assert_eq!(f.run(X86_64, 169, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(f.run(X86_64, 0, [0; 6]), RET_ALLOW);
        assert_eq!(
            f.run(0x4000_0003, 0, [0; 6]),
            RET_KILL_PROCESS,
            "i386 is killed"
        );
        assert_eq!(
            f.run(X86_64, 0x4000_0000, [0; 6]),
            RET_KILL_PROCESS,
            "x32 is killed"
        );
    }

    #[test]
    fn argument_conditions() {
        let f = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
                {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_EQ"}]},
                {"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                {"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":2,"value":4294967296,"op":"SCMP_CMP_LT"},{"index":0,"value":3,"op":"SCMP_CMP_NE"}]},
                {"names":["write"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":10,"op":"SCMP_CMP_GE"},{"index":2,"value":20,"op":"SCMP_CMP_LE"}]},
                {"names":["close"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2,"op":"SCMP_CMP_GT"}]}]}"#,
        ))
        .unwrap();
        let enosys = RET_ERRNO | 38;
        let personality = 135;
        assert_eq!(f.run(X86_64, personality, [8, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            f.run(X86_64, personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(f.run(X86_64, personality, [9, 0, 0, 0, 0, 0]), enosys);
        assert_eq!(
            f.run(X86_64, personality, [(1 << 32) | 8, 0, 0, 0, 0, 0]),
            enosys
        );
        let clone = 56;
        assert_eq!(
            f.run(X86_64, clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            f.run(X86_64, clone, [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
            enosys
        );
        assert_eq!(f.run(X86_64, 0, [4, 0, 100, 0, 0, 0]), RET_ALLOW);
        assert_eq!(f.run(X86_64, 0, [3, 0, 100, 0, 0, 0]), enosys, "NE fails");
        assert_eq!(
            f.run(X86_64, 0, [4, 0, 1 << 32, 0, 0, 0]),
            enosys,
            "LT fails on the high word"
        );
        assert_eq!(f.run(X86_64, 1, [0, 10, 20, 0, 0, 0]), RET_ALLOW);
        assert_eq!(f.run(X86_64, 1, [0, 9, 20, 0, 0, 0]), enosys);
        assert_eq!(f.run(X86_64, 1, [0, 1 << 33, 21, 0, 0, 0]), enosys);
        assert_eq!(f.run(X86_64, 1, [0, 1 << 33, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(f.run(X86_64, 3, [3, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(f.run(X86_64, 3, [2, 0, 0, 0, 0, 0]), enosys);
        assert_eq!(f.run(X86_64, 3, [1 << 40, 0, 0, 0, 0, 0]), RET_ALLOW);
    }

    const I386: u32 = AUDIT_ARCH_I386;

    #[test]
    fn each_abi_is_decided_with_its_own_numbers() {
        let p = |arches: &str| {
            profile(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","architectures":[{arches}],"syscalls":[
                {{"names":["swapoff","socketcall"],"action":"SCMP_ACT_ERRNO","errnoRet":1}},
                {{"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[{{"index":0,"value":8,"op":"SCMP_CMP_EQ"}}]}}]}}"#
            ))
        };
        let f = compile(&p(r#""SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32""#)).unwrap();
        let eperm = RET_ERRNO | 1;
        // swapoff is 168 on x86_64, 115 on i386 (where 168 is poll), 168 on x32.
        assert_eq!(f.run(X86_64, 168, [0; 6]), eperm);
        assert_eq!(f.run(I386, 115, [0; 6]), eperm);
        assert_eq!(f.run(I386, 168, [0; 6]), RET_ALLOW, "poll on i386");
        assert_eq!(f.run(X86_64, X32_SYSCALL_BIT | 168, [0; 6]), eperm);
        assert_eq!(
            f.run(X86_64, X32_SYSCALL_BIT, [0; 6]),
            RET_ALLOW,
            "x32 read"
        );
        // socketcall exists on i386 only.
        assert_eq!(f.run(I386, 102, [0; 6]), eperm);
        assert_eq!(f.run(X86_64, 102, [0; 6]), RET_ALLOW, "getuid on x86_64");
        // Conditions work in every section: personality is 135 on x86_64, 136 on i386.
        let perm = RET_ERRNO | libc::EPERM as u32;
        assert_eq!(f.run(X86_64, 135, [8, 0, 0, 0, 0, 0]), perm);
        assert_eq!(f.run(I386, 136, [8, 0, 0, 0, 0, 0]), perm);
        assert_eq!(f.run(I386, 136, [9, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            f.run(0xc000_00b7, 0, [0; 6]),
            RET_KILL_PROCESS,
            "aarch64 is not here"
        );

        // ABIs the profile does not list are killed.
        let f = compile(&p(r#""SCMP_ARCH_X86_64""#)).unwrap();
        assert_eq!(f.run(I386, 20, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(f.run(X86_64, X32_SYSCALL_BIT, [0; 6]), RET_KILL_PROCESS);
        let f = compile(&p(r#""SCMP_ARCH_X86""#)).unwrap();
        assert_eq!(
            f.run(X86_64, 168, [0; 6]),
            eperm,
            "the native ABI is always there"
        );
        assert_eq!(f.run(I386, 115, [0; 6]), eperm);
        assert_eq!(f.run(X86_64, X32_SYSCALL_BIT, [0; 6]), RET_KILL_PROCESS);
    }

    #[test]
    fn an_allowlist_longer_than_one_jump_table() {
        let names: Vec<String> = crate::syscall_table::SYSCALLS_X86_64
            .iter()
            .map(|(n, _)| format!("{n:?}"))
            .collect();
        let f = compile(&profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
                {{"names":[{}],"action":"SCMP_ACT_ALLOW"}},
                {{"names":["read"],"action":"SCMP_ACT_KILL"}}]}}"#,
            names.join(",")
        )))
        .unwrap();
        assert!(names.len() > GROUP);
        for (_, nr) in crate::syscall_table::SYSCALLS_X86_64 {
            assert_eq!(f.run(X86_64, *nr as u32, [0; 6]), RET_ALLOW, "syscall {nr}");
        }
        assert_eq!(f.run(X86_64, 999, [0; 6]), RET_ERRNO | 38);
        assert_eq!(
            f.run(X86_64, 0, [0; 6]),
            RET_ALLOW,
            "the first rule for read wins"
        );
    }

    #[test]
    fn notify_is_refused() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(compile(&p).is_err());
    }

    #[test]
    fn default_profile_compiles() {
        let spec = crate::spec::default_spec(&crate::spec::SpecOptions::default());
        let seccomp = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        let f = compile(seccomp).unwrap();
        assert!(f.len() < MAX_INSNS);
        assert_eq!(f.run(X86_64, 168, [0; 6]), RET_ERRNO | libc::EPERM as u32);
        assert_eq!(f.run(X86_64, 0, [0; 6]), RET_ALLOW);
        // 32-bit programs run, with the same denials.
        assert_eq!(f.run(I386, 20, [0; 6]), RET_ALLOW);
        assert_eq!(
            f.run(I386, 115, [0; 6]),
            RET_ERRNO | libc::EPERM as u32,
            "swapoff"
        );
        assert_eq!(f.run(X86_64, X32_SYSCALL_BIT | 39, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn podman_profile_compiles() {
        // Debian's containers-common ships podman's default allowlist profile.
        let path = "/usr/share/containers/seccomp.json";
        let data = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!("{path} is needed (apt-get install golang-github-containers-common): {e}")
        });
        let mut v: serde_json::Value = serde_json::from_str(&data).unwrap();
        // The file format has extras (archMap, includes/excludes) that podman resolves before
        // writing config.json; keep the plain entries.
        let obj = v.as_object_mut().unwrap();
        obj.remove("archMap");
        let calls = obj["syscalls"].as_array_mut().unwrap();
        calls.retain(|c| {
            c.get("includes")
                .is_none_or(|i| i.as_object().is_none_or(|o| o.is_empty()))
        });
        for c in calls.iter_mut() {
            let o = c.as_object_mut().unwrap();
            o.remove("includes");
            o.remove("excludes");
            o.remove("comment");
        }
        let mut p: LinuxSeccomp = serde_json::from_value(v).unwrap();
        // podman writes the architectures of the host's arch map into config.json.
        p.set_architectures(Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ]));
        let f = compile(&p).unwrap();
        assert!(f.len() < MAX_INSNS, "{} instructions", f.len());
        assert_eq!(f.run(X86_64, 0, [0; 6]), RET_ALLOW, "read is allowed");
        assert_eq!(f.run(I386, 20, [0; 6]), RET_ALLOW, "getpid on i386");
        assert_eq!(f.run(I386, 4, [0; 6]), RET_ALLOW, "write on i386");
        assert_eq!(
            f.run(X86_64, X32_SYSCALL_BIT | 39, [0; 6]),
            RET_ALLOW,
            "getpid on x32"
        );
        let enosys = RET_ERRNO | libc::ENOSYS as u32;
        assert_eq!(f.run(I386, 1000, [0; 6]), enosys, "an unknown i386 call");
    }
}
