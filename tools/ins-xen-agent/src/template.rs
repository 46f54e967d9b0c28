//! The xl configuration template and the values put into it.
//!
//! A template is an xl domain configuration with placeholders `@NAME@`,
//! `@MEMORY@`, `@KERNEL@`, `@RAMDISK@`, `@BRIDGE@`, `@MAC@`, `@IP@` and
//! `@INS_ARGS@` (the guest's kernel arguments that make it join: see
//! [`ins_args`]; they depend on the [`Kind`] of domain the template
//! makes: the agent has one template per kind it serves). Invariants:
//! * a template with any other `@WORD@`, or without `@NAME@` and
//!   `@INS_ARGS@`, is refused when loaded, as is one that uses a value the
//!   agent was not given (`@KERNEL@` without `--kernel` …);
//! * every value substituted matches a strict pattern (no quote, comma,
//!   backslash, space in a single value, or control character), checked
//!   when the option is parsed or the value is derived, so nothing a PVM
//!   wrote can change the configuration's structure.

use std::net::Ipv4Addr;

use ins_xen::DomId;
use ins_xen::agent::Kind;

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 8] = [
    "NAME", "MEMORY", "KERNEL", "RAMDISK", "BRIDGE", "MAC", "IP", "INS_ARGS",
];

/// Why a template or an option was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// `@WORD@` that is not a placeholder.
    #[error("unknown placeholder @{0}@ (known: {known})", known = PLACEHOLDERS.join(", "))]
    Unknown(String),
    /// A required placeholder is missing.
    #[error("the template must use @{0}@")]
    Missing(&'static str),
    /// The template uses a value the agent was not given.
    #[error("the template uses @{0}@ but {1} was not given")]
    NoValue(&'static str, &'static str),
    /// The template uses a value its kind of domain never has.
    #[error("a {1} template cannot use @{0}@ ({2})")]
    NotForKind(&'static str, &'static str, &'static str),
    /// An option's value does not match its pattern.
    #[error("{0}: {1}")]
    BadOption(&'static str, String),
}

/// A loaded template.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
}

impl Template {
    /// Checks `text`'s placeholders (see the module docs).
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut rest = text;
        while let Some(i) = rest.find('@') {
            let after = &rest[i + 1..];
            let Some(j) = after.find('@') else { break };
            let word = &after[..j];
            if !word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                if !PLACEHOLDERS.contains(&word) {
                    return Err(TemplateError::Unknown(word.into()));
                }
                rest = &after[j + 1..];
            } else {
                rest = after;
            }
        }
        let t = Template { text: text.into() };
        for p in ["NAME", "INS_ARGS"] {
            if !t.uses(p) {
                return Err(TemplateError::Missing(p));
            }
        }
        Ok(t)
    }

    /// Whether the template uses `@p@`.
    pub fn uses(&self, p: &str) -> bool {
        self.text.contains(&format!("@{p}@"))
    }

    /// The configuration with every placeholder replaced (`values` come
    /// from [`Fixed`] and [`Values`], all checked).
    pub fn render(&self, fixed: &Fixed, v: &Values) -> String {
        let mut out = self.text.clone();
        let mem = fixed.memory_mib.to_string();
        let pairs: [(&str, Option<&str>); 8] = [
            ("NAME", Some(&v.name)),
            ("MEMORY", Some(&mem)),
            ("KERNEL", fixed.kernel.as_deref()),
            ("RAMDISK", fixed.ramdisk.as_deref()),
            ("BRIDGE", fixed.bridge.as_deref()),
            ("MAC", v.mac.as_deref()),
            ("IP", v.ip.as_deref()),
            ("INS_ARGS", Some(&v.ins_args)),
        ];
        for (p, val) in pairs {
            out = out.replace(&format!("@{p}@"), val.unwrap_or(""));
        }
        out
    }

    /// Refuses a template that uses a value the agent lacks (the
    /// options named are those of `kind`'s template), or one a `kind` of
    /// domain never has (a unikernel has no initramfs).
    pub fn check_against(
        &self,
        kind: Kind,
        fixed: &Fixed,
        has_pool: bool,
    ) -> Result<(), TemplateError> {
        let kernel = match kind {
            Kind::Linux => "--kernel",
            Kind::Unikernel => {
                if self.uses("RAMDISK") {
                    return Err(TemplateError::NotForKind(
                        "RAMDISK",
                        kind.name(),
                        "the unikernel is the whole guest: it has no initramfs",
                    ));
                }
                "--unikernel-kernel"
            }
        };
        let need = [
            ("KERNEL", fixed.kernel.is_some(), kernel),
            ("RAMDISK", fixed.ramdisk.is_some(), "--ramdisk"),
            ("BRIDGE", fixed.bridge.is_some(), "--bridge"),
            ("IP", has_pool, "--ip-range"),
            ("MAC", has_pool, "--ip-range"),
        ];
        for (p, given, opt) in need {
            if self.uses(p) && !given {
                return Err(TemplateError::NoValue(p, opt));
            }
        }
        Ok(())
    }
}

/// The values that are the same for every domain (operator's options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    /// `memory` (MiB).
    pub memory_mib: u32,
    /// Guest kernel path.
    pub kernel: Option<String>,
    /// Guest initramfs path.
    pub ramdisk: Option<String>,
    /// Bridge of the domain's vif.
    pub bridge: Option<String>,
}

/// The values of one domain (derived by the agent, never copied from a
/// request: the channel name is checked by `ins_xen::agent::check_name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    /// Domain name.
    pub name: String,
    /// vif MAC address.
    pub mac: Option<String>,
    /// The guest's IPv4 address.
    pub ip: Option<String>,
    /// Kernel arguments: see [`ins_args`].
    pub ins_args: String,
}

/// The guest's kernel arguments (`@INS_ARGS@`) for a domain of `kind`:
/// * Linux: `ins_driver=<pvm> ins_channel=<name>`; the guest's init runs
///   `ins --xen-driver <pvm> --xen-channel <name>`;
/// * unikernel: `driver=<pvm> channel=<name> seed=<seed>`, the names
///   `ins-pv` reads; `seed` is a fresh secret from dom0's RNG, the
///   unikernel's only real entropy (it has no RNG device) for its hash
///   keys, TCP initial sequence numbers and ports.
///
/// Every part is derived by the agent (the channel name was checked by
/// `ins_xen::agent::check_name`).
pub fn ins_args(kind: Kind, pvm: DomId, channel: &str, seed: u64) -> String {
    match kind {
        Kind::Linux => format!("ins_driver={pvm} ins_channel={channel}"),
        Kind::Unikernel => format!("driver={pvm} channel={channel} seed={seed}"),
    }
}

/// The domain name of `channel`'s instance: `ins<pvm>-<channel>`.
pub fn domain_name(pvm: DomId, channel: &str) -> String {
    format!("ins{pvm}-{channel}")
}

/// A path option: absolute, `[A-Za-z0-9._/+-]`, no `..` element, ≤ 255
/// bytes.
pub fn check_path(opt: &'static str, p: &str) -> Result<String, TemplateError> {
    let ok = p.starts_with('/')
        && p.len() <= 255
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/+-".contains(&b))
        && !p.split('/').any(|e| e == "..");
    if ok {
        Ok(p.into())
    } else {
        Err(TemplateError::BadOption(
            opt,
            format!("{p:?} is not an absolute path of [A-Za-z0-9._/+-]"),
        ))
    }
}

/// A bridge (interface) name: 1 to 15 bytes of `[A-Za-z0-9_.-]`.
pub fn check_bridge(b: &str) -> Result<String, TemplateError> {
    let ok = (1..=15).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
    if ok {
        Ok(b.into())
    } else {
        Err(TemplateError::BadOption(
            "--bridge",
            format!("{b:?} is not an interface name (1-15 of [A-Za-z0-9_.-])"),
        ))
    }
}

/// The addresses handed to instance domains, lowest free first; each
/// domain's MAC is the prefix's three octets and the address's last three.
#[derive(Debug, Clone)]
pub struct IpPool {
    first: u32,
    last: u32,
    mac_prefix: [u8; 3],
    used: std::collections::BTreeSet<u32>,
}

/// Most addresses in a range.
pub const MAX_POOL: u32 = 4096;

impl IpPool {
    /// `range` is `A.B.C.D-A.B.C.E` (at most [`MAX_POOL`] addresses);
    /// `mac` is three hex octets, a unicast, locally or vendor assigned
    /// prefix (`00:16:3e` is Xen's).
    pub fn parse(range: &str, mac: &str) -> Result<IpPool, TemplateError> {
        let bad = |m: String| TemplateError::BadOption("--ip-range", m);
        let (a, b) = range
            .split_once('-')
            .ok_or_else(|| bad(format!("{range:?} is not FIRST-LAST")))?;
        let a: Ipv4Addr = a.parse().map_err(|_| bad(format!("{a:?}")))?;
        let b: Ipv4Addr = b.parse().map_err(|_| bad(format!("{b:?}")))?;
        let (first, last) = (u32::from(a), u32::from(b));
        if first > last || last - first >= MAX_POOL {
            return Err(bad(format!(
                "{range}: FIRST <= LAST and at most {MAX_POOL} addresses"
            )));
        }
        let oct: Vec<u8> = mac
            .split(':')
            .map(|o| {
                if o.len() == 2 {
                    u8::from_str_radix(o, 16).ok()
                } else {
                    None
                }
            })
            .collect::<Option<Vec<u8>>>()
            .filter(|v| v.len() == 3 && v[0] & 1 == 0)
            .ok_or_else(|| {
                TemplateError::BadOption(
                    "--mac-prefix",
                    format!("{mac:?} is not three hex octets of a unicast prefix"),
                )
            })?;
        Ok(IpPool {
            first,
            last,
            mac_prefix: [oct[0], oct[1], oct[2]],
            used: Default::default(),
        })
    }

    /// The lowest free address and its MAC, now taken.
    pub fn take(&mut self) -> Option<(Ipv4Addr, String)> {
        let ip = (self.first..=self.last).find(|a| !self.used.contains(a))?;
        self.used.insert(ip);
        let o = ip.to_be_bytes();
        let p = self.mac_prefix;
        let mac = format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            p[0], p[1], p[2], o[1], o[2], o[3]
        );
        Some((Ipv4Addr::from(ip), mac))
    }

    /// Frees an address.
    pub fn put(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = "name = \"@NAME@\"\nmemory = @MEMORY@\nkernel = \"@KERNEL@\"\n\
        vif = [ 'bridge=@BRIDGE@,mac=@MAC@' ]\nextra = \"console=hvc0 ins_ip=@IP@ @INS_ARGS@\"\n";

    fn fixed() -> Fixed {
        Fixed {
            memory_mib: 192,
            kernel: Some("/boot/vmlinuz-domU".into()),
            ramdisk: None,
            bridge: Some("xenbr0".into()),
        }
    }

    #[test]
    fn renders_every_placeholder() {
        let t = Template::parse(LAB).unwrap();
        let mut pool = IpPool::parse("169.254.100.10-169.254.100.11", "00:16:3e").unwrap();
        let (ip, mac) = pool.take().unwrap();
        assert_eq!(mac, "00:16:3e:fe:64:0a");
        t.check_against(Kind::Linux, &fixed(), true).unwrap();
        let v = Values {
            name: domain_name(DomId(1), "x1-2"),
            mac: Some(mac),
            ip: Some(ip.to_string()),
            ins_args: ins_args(Kind::Linux, DomId(1), "x1-2", 99),
        };
        let out = t.render(&fixed(), &v);
        assert_eq!(
            out,
            "name = \"ins1-x1-2\"\nmemory = 192\nkernel = \"/boot/vmlinuz-domU\"\n\
             vif = [ 'bridge=xenbr0,mac=00:16:3e:fe:64:0a' ]\n\
             extra = \"console=hvc0 ins_ip=169.254.100.10 ins_driver=1 ins_channel=x1-2\"\n"
        );
        assert!(!out.contains('@'));
    }

    #[test]
    fn unikernel_args_are_ins_pv_names_with_a_seed() {
        assert_eq!(
            ins_args(Kind::Unikernel, DomId(4), "s2", 18_446_744_073_709_551_615),
            "driver=4 channel=s2 seed=18446744073709551615"
        );
        let t = Template::parse(
            "name=\"@NAME@\"\nkernel=\"@KERNEL@\"\nmemory=@MEMORY@\n\
             extra=\"ip=@IP@/24 gw=10.0.0.1 @INS_ARGS@\"\nvif=['mac=@MAC@']\n",
        )
        .unwrap();
        let mut f = fixed();
        f.kernel = None;
        assert_eq!(
            t.check_against(Kind::Unikernel, &f, true).unwrap_err(),
            TemplateError::NoValue("KERNEL", "--unikernel-kernel")
        );
        f.kernel = Some("/boot/ins-pv".into());
        t.check_against(Kind::Unikernel, &f, true).unwrap();
        let with_ramdisk = Template::parse("name=\"@NAME@\" @INS_ARGS@ @RAMDISK@").unwrap();
        let e = with_ramdisk
            .check_against(Kind::Unikernel, &f, true)
            .unwrap_err();
        assert!(matches!(
            e,
            TemplateError::NotForKind("RAMDISK", "unikernel", _)
        ));
        assert!(
            e.to_string()
                .starts_with("a unikernel template cannot use @RAMDISK@")
        );
    }

    #[test]
    fn refuses_unknown_missing_and_unbacked_placeholders() {
        assert_eq!(
            Template::parse("name=\"@NAME@\" @INS_ARGS@ @CMD@").unwrap_err(),
            TemplateError::Unknown("CMD".into())
        );
        assert_eq!(
            Template::parse("extra=\"@INS_ARGS@\"").unwrap_err(),
            TemplateError::Missing("NAME")
        );
        assert_eq!(
            Template::parse("name=\"@NAME@\"").unwrap_err(),
            TemplateError::Missing("INS_ARGS")
        );
        // Mail addresses and lone @ are no placeholders.
        Template::parse("# a@b.c @ @@ @lower@\nname=\"@NAME@\" @INS_ARGS@").unwrap();
        let t = Template::parse(LAB).unwrap();
        assert_eq!(
            t.check_against(Kind::Linux, &fixed(), false).unwrap_err(),
            TemplateError::NoValue("IP", "--ip-range")
        );
        let mut f = fixed();
        f.kernel = None;
        assert_eq!(
            t.check_against(Kind::Linux, &f, true).unwrap_err(),
            TemplateError::NoValue("KERNEL", "--kernel")
        );
    }

    #[test]
    fn options_match_strict_patterns() {
        check_path("--kernel", "/boot/vmlinuz-6.1.0+x_1").unwrap();
        for bad in [
            "boot/k",
            "/boot/k\"",
            "/a b",
            "/a,b",
            "/a/../etc",
            "/a'",
            "/a\nb",
        ] {
            assert!(check_path("--kernel", bad).is_err(), "{bad:?}");
        }
        check_bridge("xenbr0").unwrap();
        for bad in ["", "a b", "br,0", "x".repeat(16).as_str(), "br'"] {
            assert!(check_bridge(bad).is_err(), "{bad:?}");
        }
        for (r, m) in [
            ("10.0.0.2-10.0.0.1", "00:16:3e"),
            ("10.0.0.1", "00:16:3e"),
            ("10.0.0.1-10.0.16.1", "00:16:3e"),
            ("10.0.0.1-10.0.0.2", "01:16:3e"),
            ("10.0.0.1-10.0.0.2", "00:16"),
            ("10.0.0.1-10.0.0.2", "00:16:3e:1"),
            ("10.0.0.1-10.0.0.2", "0:16:3e"),
        ] {
            assert!(IpPool::parse(r, m).is_err(), "{r} {m}");
        }
    }

    #[test]
    fn pool_hands_out_lowest_free_and_runs_out() {
        let mut p = IpPool::parse("10.0.0.1-10.0.0.2", "02:00:00").unwrap();
        let a = p.take().unwrap().0;
        let b = p.take().unwrap().0;
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("10.0.0.1".into(), "10.0.0.2".into())
        );
        assert!(p.take().is_none());
        p.put(a);
        assert_eq!(p.take().unwrap().0, a);
    }
}
