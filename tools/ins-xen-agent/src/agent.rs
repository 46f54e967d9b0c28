//! The agent's state machine, over a xenstore ([`Store`]) and a toolstack
//! ([`Toolstack`]) given by the caller (`main.rs`: `/dev/xen/xenbus` and
//! `xl`; the tests: in-memory fakes, since this host runs no Xen).
//!
//! One [`Agent::step`]: reap the domains that are gone, then answer at
//! most `max_requests` requests (lowest names first). Invariants:
//! * the PVM is not trusted: each request's name and value are checked
//!   ([`ins_xen::agent`]); a malformed value gets an error answer, a key
//!   that is not a valid channel name is removed unanswered;
//! * at most `max_domains` domains exist for the PVM at once, of every
//!   kind together;
//! * a domain of a kind is made only from that kind's template (the
//!   operator's); an agent without one answers such a request with an
//!   error that names the options it lacks;
//! * only domains this agent created are destroyed, and only for the
//!   channel they were created for (the record, not the request, names
//!   the domain), after checking xenstore still names it as created;
//! * every request is removed once answered, so each is handled once;
//!   answers are owned by the PVM and readable by nobody else.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use ins_xen::DomId;
use ins_xen::agent::{ANS_DIR, Answer, Kind, REQ_DIR, Request, check_name};
use tracing::{info, warn};

use crate::template::{Fixed, IpPool, Template, Values, domain_name, ins_args};

/// The xenstore calls the agent makes (paths are absolute).
pub trait Store {
    /// The children of `dir` (none when it does not exist).
    fn list(&mut self, dir: &str) -> std::io::Result<Vec<String>>;
    /// A node's value (`None` when it does not exist).
    fn read(&mut self, path: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// Writes a node and makes `owner` its owner, with no access for
    /// anyone else.
    fn write_owned(&mut self, path: &str, value: &[u8], owner: DomId) -> std::io::Result<()>;
    /// Removes a node (absent is fine).
    fn remove(&mut self, path: &str) -> std::io::Result<()>;
}

/// What the agent asks of the toolstack.
pub trait Toolstack {
    /// Creates domain `name` from `config`; its id.
    fn create(&mut self, name: &str, config: &str) -> Result<DomId, String>;
    /// Destroys a domain.
    fn destroy(&mut self, domid: DomId) -> Result<(), String>;
    /// A fresh secret from dom0's RNG (a unikernel's `seed=`).
    fn seed(&mut self) -> Result<u64, String>;
}

/// How to make domains of one kind: its template and the operator's
/// values for it.
#[derive(Debug, Clone)]
pub struct Flavour {
    /// The xl template (checked against `fixed` for its kind).
    pub template: Template,
    /// Memory, kernel, initramfs, bridge.
    pub fixed: Fixed,
}

/// The kinds of domain this agent makes (at least one).
#[derive(Debug, Clone, Default)]
pub struct Flavours {
    /// Linux guests running `ins` (`--template`).
    pub linux: Option<Flavour>,
    /// PV unikernels (`--unikernel-template`).
    pub unikernel: Option<Flavour>,
}

impl Flavours {
    fn get(&self, kind: Kind) -> Option<&Flavour> {
        match kind {
            Kind::Linux => self.linux.as_ref(),
            Kind::Unikernel => self.unikernel.as_ref(),
        }
    }
}

/// The options an agent needs to make domains of `kind` (for errors).
pub fn options_for(kind: Kind) -> &'static str {
    match kind {
        Kind::Linux => "--template and --kernel (and --ramdisk)",
        Kind::Unikernel => "--unikernel-template and --unikernel-kernel",
    }
}

/// Bounds on what one PVM may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most instance domains at once.
    pub max_domains: usize,
    /// Most requests handled per step (the rest wait for the next one).
    pub max_requests: usize,
}

/// One domain the agent created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dom {
    /// Its id.
    pub domid: DomId,
    /// Its name.
    pub name: String,
    /// What it runs.
    pub kind: Kind,
    /// Its address, from the pool.
    pub ip: Option<Ipv4Addr>,
}

/// What a step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// Requests answered.
    pub answered: usize,
    /// Domains found gone.
    pub reaped: usize,
    /// The PVM itself is gone (its domains were destroyed).
    pub pvm_gone: bool,
}

/// Recently gone domains remembered (a late `destroy` is then answered
/// `destroyed`).
const GONE_KEPT: usize = 256;

/// The agent for one PVM.
pub struct Agent<S: Store, T: Toolstack> {
    /// The xenstore.
    pub store: S,
    tools: T,
    pvm: DomId,
    flavours: Flavours,
    pool: Option<IpPool>,
    limits: Limits,
    /// Live domains by channel.
    domains: BTreeMap<String, Dom>,
    /// Channels whose domain went, and its id.
    gone: VecDeque<(String, DomId)>,
}

impl<S: Store, T: Toolstack> Agent<S, T> {
    /// An agent for `pvm` (templates and options already checked).
    pub fn new(
        store: S,
        tools: T,
        pvm: DomId,
        flavours: Flavours,
        pool: Option<IpPool>,
        limits: Limits,
    ) -> Self {
        Agent {
            store,
            tools,
            pvm,
            flavours,
            pool,
            limits,
            domains: BTreeMap::new(),
            gone: VecDeque::new(),
        }
    }

    /// The domains alive, by channel.
    pub fn domains(&self) -> &BTreeMap<String, Dom> {
        &self.domains
    }

    fn home(&self) -> String {
        format!("/local/domain/{}", self.pvm)
    }

    /// Whether xenstore still names `d` as the domain created.
    fn alive(&mut self, d: &Dom) -> bool {
        match self.store.read(&format!("/local/domain/{}/name", d.domid)) {
            Ok(Some(n)) => n == d.name.as_bytes(),
            Ok(None) => false,
            Err(e) => {
                warn!(domid = %d.domid, error = %e, "reading a domain's name");
                true
            }
        }
    }

    fn forget(&mut self, channel: &str) {
        if let Some(d) = self.domains.remove(channel) {
            if let (Some(p), Some(ip)) = (self.pool.as_mut(), d.ip) {
                p.put(ip);
            }
            if self.gone.len() >= GONE_KEPT {
                self.gone.pop_front();
            }
            self.gone.push_back((channel.into(), d.domid));
        }
    }

    /// Reaps gone domains, then answers requests.
    pub fn step(&mut self) -> std::io::Result<Step> {
        let mut st = Step::default();
        let chans: Vec<(String, Dom)> = self
            .domains
            .iter()
            .map(|(c, d)| (c.clone(), d.clone()))
            .collect();
        for (c, d) in chans {
            if !self.alive(&d) {
                println!("XAGENT gone channel={c} domid={} name={}", d.domid, d.name);
                info!(channel = %c, domid = %d.domid, "instance domain gone");
                self.forget(&c);
                st.reaped += 1;
            }
        }
        if self.store.read(&format!("{}/name", self.home()))?.is_none() {
            warn!(pvm = %self.pvm, "the PVM is gone; destroying its instance domains");
            self.destroy_all();
            st.pvm_gone = true;
            return Ok(st);
        }
        let req_dir = format!("{}/{REQ_DIR}", self.home());
        let mut names = self.store.list(&req_dir)?;
        names.sort();
        names.truncate(self.limits.max_requests);
        for name in names {
            let path = format!("{req_dir}/{name}");
            if check_name(&name).is_err() {
                warn!(key = ?name, "request key is not a channel name; removed unanswered");
                self.store.remove(&path)?;
                continue;
            }
            let Some(value) = self.store.read(&path)? else {
                continue;
            };
            let answer = match Request::parse(&value) {
                Ok(r) => self.handle(&name, r),
                Err(e) => Answer::error(&format!("bad request: {e}")),
            };
            println!("XAGENT request channel={name} answer={:?}", answer.value());
            let ans = format!("{}/{ANS_DIR}/{name}", self.home());
            self.store
                .write_owned(&ans, answer.value().as_bytes(), self.pvm)?;
            self.store.remove(&path)?;
            st.answered += 1;
        }
        Ok(st)
    }

    fn handle(&mut self, channel: &str, r: Request) -> Answer {
        match r {
            Request::Create(kind) => self.create(channel, kind),
            Request::Destroy(domid) => self.destroy(channel, domid),
        }
    }

    fn create(&mut self, channel: &str, kind: Kind) -> Answer {
        let Some(flavour) = self.flavours.get(kind).cloned() else {
            return Answer::error(&format!(
                "this agent makes no {} instance domains (it was started without {})",
                kind.name(),
                options_for(kind)
            ));
        };
        if let Some(d) = self.domains.get(channel) {
            return Answer::error(&format!("channel {channel} already has dom{}", d.domid));
        }
        if self.domains.len() >= self.limits.max_domains {
            return Answer::error(&format!(
                "max-domains ({}) reached",
                self.limits.max_domains
            ));
        }
        let (ip, mac) = match self.pool.as_mut() {
            Some(p) => match p.take() {
                Some((ip, mac)) => (Some(ip), Some(mac)),
                None => return Answer::error("no free address in --ip-range"),
            },
            None => (None, None),
        };
        let name = domain_name(self.pvm, channel);
        let made = match kind {
            Kind::Linux => Ok(0),
            Kind::Unikernel => self.tools.seed().map_err(|e| format!("seed: {e}")),
        }
        .and_then(|seed| {
            let v = Values {
                name: name.clone(),
                mac,
                ip: ip.map(|a| a.to_string()),
                ins_args: ins_args(kind, self.pvm, channel, seed),
            };
            let config = flavour.template.render(&flavour.fixed, &v);
            self.tools
                .create(&name, &config)
                .map_err(|e| format!("xl create: {e}"))
        });
        match made {
            Ok(domid) => {
                println!(
                    "XAGENT created channel={channel} kind={} domid={domid} name={name} ip={}",
                    kind.name(),
                    ip.map_or("-".into(), |a| a.to_string())
                );
                info!(channel, kind = kind.name(), %domid, name, ip = ?ip, "instance domain created");
                self.domains.insert(
                    channel.into(),
                    Dom {
                        domid,
                        name,
                        kind,
                        ip,
                    },
                );
                Answer::Created(domid)
            }
            Err(e) => {
                if let (Some(p), Some(ip)) = (self.pool.as_mut(), ip) {
                    p.put(ip);
                }
                warn!(channel, kind = kind.name(), error = %e, "instance domain not created");
                Answer::error(&e)
            }
        }
    }

    fn destroy(&mut self, channel: &str, domid: DomId) -> Answer {
        match self.domains.get(channel).cloned() {
            Some(d) if d.domid == domid => {
                if self.alive(&d)
                    && let Err(e) = self.tools.destroy(domid)
                {
                    return Answer::error(&format!("xl destroy: {e}"));
                }
                println!(
                    "XAGENT destroyed channel={channel} kind={} domid={domid}",
                    d.kind.name()
                );
                self.forget(channel);
                Answer::Destroyed
            }
            _ if self.gone.iter().any(|(c, d)| c == channel && *d == domid) => Answer::Destroyed,
            _ => Answer::error(&format!(
                "dom{domid} is no domain this agent created for channel {channel}"
            )),
        }
    }

    /// Destroys every domain this agent created (the PVM is gone, or the
    /// agent stops with `--destroy-on-exit`).
    pub fn destroy_all(&mut self) {
        let all: Vec<(String, Dom)> = std::mem::take(&mut self.domains).into_iter().collect();
        for (c, d) in all {
            if self.alive(&d) {
                match self.tools.destroy(d.domid) {
                    Ok(()) => println!("XAGENT destroyed channel={c} domid={}", d.domid),
                    Err(e) => warn!(domid = %d.domid, error = %e, "xl destroy"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// xenstore as a map (what reality cannot give on this host).
    #[derive(Default)]
    struct Mem {
        nodes: BTreeMap<String, (Vec<u8>, Option<DomId>)>,
    }

    impl Store for Mem {
        fn list(&mut self, dir: &str) -> std::io::Result<Vec<String>> {
            let pre = format!("{dir}/");
            Ok(self
                .nodes
                .keys()
                .filter_map(|k| k.strip_prefix(&pre))
                .filter(|k| !k.contains('/'))
                .map(String::from)
                .collect())
        }
        fn read(&mut self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
            Ok(self.nodes.get(path).map(|(v, _)| v.clone()))
        }
        fn write_owned(&mut self, path: &str, value: &[u8], owner: DomId) -> std::io::Result<()> {
            self.nodes
                .insert(path.into(), (value.to_vec(), Some(owner)));
            Ok(())
        }
        fn remove(&mut self, path: &str) -> std::io::Result<()> {
            self.nodes.remove(path);
            Ok(())
        }
    }

    /// A toolstack that records calls; created domains appear in the
    /// shared store as xenstored would show them.
    struct Xl {
        store: std::rc::Rc<std::cell::RefCell<Mem>>,
        next: u16,
        configs: Vec<String>,
        destroyed: Vec<DomId>,
        fail: bool,
        seeds: u64,
        seed_fails: bool,
    }

    impl Toolstack for Xl {
        fn create(&mut self, name: &str, config: &str) -> Result<DomId, String> {
            if self.fail {
                return Err("out of memory\nsecond line".into());
            }
            self.configs.push(config.into());
            let d = DomId(self.next);
            self.next += 1;
            self.store
                .borrow_mut()
                .nodes
                .insert(format!("/local/domain/{d}/name"), (name.into(), None));
            Ok(d)
        }
        fn destroy(&mut self, domid: DomId) -> Result<(), String> {
            self.destroyed.push(domid);
            self.store
                .borrow_mut()
                .nodes
                .remove(&format!("/local/domain/{domid}/name"));
            Ok(())
        }
        fn seed(&mut self) -> Result<u64, String> {
            if self.seed_fails {
                return Err("/dev/urandom: gone".into());
            }
            self.seeds += 1;
            Ok(1000 + self.seeds)
        }
    }

    #[derive(Clone, Default)]
    struct Shared(std::rc::Rc<std::cell::RefCell<Mem>>);

    impl Store for Shared {
        fn list(&mut self, dir: &str) -> std::io::Result<Vec<String>> {
            self.0.borrow_mut().list(dir)
        }
        fn read(&mut self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
            self.0.borrow_mut().read(path)
        }
        fn write_owned(&mut self, path: &str, value: &[u8], owner: DomId) -> std::io::Result<()> {
            self.0.borrow_mut().write_owned(path, value, owner)
        }
        fn remove(&mut self, path: &str) -> std::io::Result<()> {
            self.0.borrow_mut().remove(path)
        }
    }

    const P: &str = "/local/domain/3";

    fn agent(max_domains: usize) -> (Agent<Shared, Xl>, Shared) {
        agent_of(max_domains, true, false)
    }

    const UKL: &str = "name=\"@NAME@\"\nkernel=\"@KERNEL@\"\nmemory=@MEMORY@\n\
        vif=['mac=@MAC@']\nextra=\"ip=@IP@/24 gw=10.0.0.1 @INS_ARGS@\"";

    /// An agent for PVM 3 with two addresses, making Linux and/or
    /// unikernel domains.
    fn agent_of(max_domains: usize, linux: bool, unikernel: bool) -> (Agent<Shared, Xl>, Shared) {
        let s = Shared::default();
        s.0.borrow_mut()
            .nodes
            .insert(format!("{P}/name"), (b"pvm".to_vec(), None));
        let xl = Xl {
            store: s.0.clone(),
            next: 10,
            configs: vec![],
            destroyed: vec![],
            fail: false,
            seeds: 0,
            seed_fails: false,
        };
        let t =
            Template::parse("name=\"@NAME@\"\nvif=['mac=@MAC@']\nextra=\"ins_ip=@IP@ @INS_ARGS@\"")
                .unwrap();
        let fixed = Fixed {
            memory_mib: 64,
            kernel: None,
            ramdisk: None,
            bridge: None,
        };
        let ukl_fixed = Fixed {
            memory_mib: 32,
            kernel: Some("/boot/ins-pv".into()),
            ramdisk: None,
            bridge: None,
        };
        let ukl = Template::parse(UKL).unwrap();
        ukl.check_against(Kind::Unikernel, &ukl_fixed, true)
            .unwrap();
        let flavours = Flavours {
            linux: linux.then_some(Flavour { template: t, fixed }),
            unikernel: unikernel.then_some(Flavour {
                template: ukl,
                fixed: ukl_fixed,
            }),
        };
        let pool = IpPool::parse("10.0.0.5-10.0.0.6", "00:16:3e").unwrap();
        let a = Agent::new(
            s.clone(),
            xl,
            DomId(3),
            flavours,
            Some(pool),
            Limits {
                max_domains,
                max_requests: 4,
            },
        );
        (a, s)
    }

    fn req(s: &Shared, name: &str, v: &str) {
        s.0.borrow_mut().nodes.insert(
            format!("{P}/{REQ_DIR}/{name}"),
            (v.as_bytes().to_vec(), Some(DomId(3))),
        );
    }

    fn ans(s: &Shared, name: &str) -> Option<String> {
        let n =
            s.0.borrow_mut()
                .nodes
                .remove(&format!("{P}/{ANS_DIR}/{name}"));
        n.map(|(v, owner)| {
            assert_eq!(owner, Some(DomId(3)), "answers are owned by the PVM");
            String::from_utf8(v).unwrap()
        })
    }

    #[test]
    fn creates_answers_and_destroys_only_its_own() {
        let (mut a, s) = agent(2);
        req(&s, "x1-1", "create");
        req(&s, "x1-2", "create");
        assert_eq!(a.step().unwrap().answered, 2);
        assert_eq!(ans(&s, "x1-1").as_deref(), Some("created 10"));
        assert_eq!(ans(&s, "x1-2").as_deref(), Some("created 11"));
        assert!(
            s.0.borrow_mut()
                .list(&format!("{P}/{REQ_DIR}"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            a.tools.configs[0],
            "name=\"ins3-x1-1\"\nvif=['mac=00:16:3e:00:00:05']\nextra=\"ins_ip=10.0.0.5 ins_driver=3 ins_channel=x1-1\""
        );
        // Over the limit, a second create of a name, a foreign domain.
        req(&s, "x1-3", "create");
        req(&s, "x1-1", "create");
        a.step().unwrap();
        assert_eq!(
            ans(&s, "x1-3").as_deref(),
            Some("error max-domains (2) reached")
        );
        assert_eq!(
            ans(&s, "x1-1").as_deref(),
            Some("error channel x1-1 already has dom10")
        );
        req(&s, "x1-1", "destroy 11");
        req(&s, "x1-9", "destroy 0");
        a.step().unwrap();
        assert!(
            ans(&s, "x1-1")
                .unwrap()
                .starts_with("error dom11 is no domain")
        );
        assert!(
            ans(&s, "x1-9")
                .unwrap()
                .starts_with("error dom0 is no domain")
        );
        assert!(a.tools.destroyed.is_empty());
        req(&s, "x1-1", "destroy 10");
        a.step().unwrap();
        assert_eq!(ans(&s, "x1-1").as_deref(), Some("destroyed"));
        assert_eq!(a.tools.destroyed, [DomId(10)]);
        // Its address is free again.
        req(&s, "x1-4", "create");
        a.step().unwrap();
        assert_eq!(ans(&s, "x1-4").as_deref(), Some("created 12"));
        assert!(a.tools.configs[2].contains("ins_ip=10.0.0.5 "));
    }

    #[test]
    fn a_domain_destroyed_elsewhere_is_reaped_and_a_late_destroy_is_fine() {
        let (mut a, s) = agent(2);
        req(&s, "a", "create");
        a.step().unwrap();
        assert_eq!(ans(&s, "a").as_deref(), Some("created 10"));
        // `xl destroy` by someone else: the name goes from xenstore.
        s.0.borrow_mut().nodes.remove("/local/domain/10/name");
        assert_eq!(a.step().unwrap().reaped, 1);
        assert!(a.domains().is_empty());
        req(&s, "a", "destroy 10");
        a.step().unwrap();
        assert_eq!(ans(&s, "a").as_deref(), Some("destroyed"));
        assert!(a.tools.destroyed.is_empty());
        // A new domain reusing the id under another name is not ours.
        s.0.borrow_mut()
            .nodes
            .insert("/local/domain/11/name".into(), (b"other".to_vec(), None));
        req(&s, "b", "create");
        a.step().unwrap();
        assert_eq!(ans(&s, "b").as_deref(), Some("created 11"));
    }

    #[test]
    fn hostile_requests_are_refused_and_bounded() {
        let (mut a, s) = agent(8);
        req(&s, "Bad_Name", "create");
        req(&s, "c1", "create; xl destroy 0");
        req(&s, "c2", "destroy 0x1");
        req(&s, "c3", "create\n");
        a.step().unwrap();
        assert!(ans(&s, "Bad_Name").is_none());
        assert!(s.0.borrow().nodes.keys().all(|k| !k.contains("Bad_Name")));
        for c in ["c1", "c2", "c3"] {
            assert!(ans(&s, c).unwrap().starts_with("error bad request"), "{c}");
        }
        assert!(a.tools.configs.is_empty());
        // At most max_requests (4) per step.
        for i in 0..6 {
            req(&s, &format!("n{i}"), "create");
        }
        assert_eq!(a.step().unwrap().answered, 4);
        assert_eq!(a.step().unwrap().answered, 2);
        assert_eq!(a.domains().len(), 2, "the pool has two addresses");
        assert_eq!(
            ans(&s, "n2").as_deref(),
            Some("error no free address in --ip-range")
        );
    }

    #[test]
    fn xl_failure_is_answered_on_one_printable_line_and_frees_the_address() {
        let (mut a, s) = agent(2);
        a.tools.fail = true;
        req(&s, "a", "create");
        a.step().unwrap();
        assert_eq!(
            ans(&s, "a").as_deref(),
            Some("error xl create: out of memory?second line")
        );
        a.tools.fail = false;
        req(&s, "b", "create");
        a.step().unwrap();
        assert!(a.tools.configs[0].contains("ins_ip=10.0.0.5 "));
    }

    #[test]
    fn unikernel_domains_come_from_their_own_template_with_a_fresh_seed() {
        let (mut a, s) = agent_of(2, true, true);
        req(&s, "u1", "create unikernel");
        req(&s, "u2", "create");
        a.step().unwrap();
        assert_eq!(ans(&s, "u1").as_deref(), Some("created 10"));
        assert_eq!(ans(&s, "u2").as_deref(), Some("created 11"));
        assert_eq!(
            a.tools.configs[0],
            "name=\"ins3-u1\"\nkernel=\"/boot/ins-pv\"\nmemory=32\n\
             vif=['mac=00:16:3e:00:00:05']\n\
             extra=\"ip=10.0.0.5/24 gw=10.0.0.1 driver=3 channel=u1 seed=1001\""
        );
        assert!(a.tools.configs[1].contains("ins_ip=10.0.0.6 ins_driver=3 ins_channel=u2"));
        assert_eq!(a.domains()["u1"].kind, Kind::Unikernel);
        // Kinds share max-domains and the pool.
        req(&s, "u3", "create unikernel");
        a.step().unwrap();
        assert_eq!(
            ans(&s, "u3").as_deref(),
            Some("error max-domains (2) reached")
        );
        req(&s, "u1", "destroy 10");
        a.step().unwrap();
        assert_eq!(ans(&s, "u1").as_deref(), Some("destroyed"));
        req(&s, "u4", "create unikernel");
        a.step().unwrap();
        assert_eq!(ans(&s, "u4").as_deref(), Some("created 12"));
        assert!(a.tools.configs[2].ends_with("channel=u4 seed=1002\""));
    }

    #[test]
    fn an_agent_without_a_kinds_template_refuses_it_by_name() {
        let (mut a, s) = agent_of(2, true, false);
        req(&s, "u1", "create unikernel");
        a.step().unwrap();
        assert_eq!(
            ans(&s, "u1").as_deref(),
            Some(
                "error this agent makes no unikernel instance domains (it was started without --unikernel-template and --unikernel-kernel)"
            )
        );
        assert!(a.tools.configs.is_empty() && a.domains().is_empty());
        assert_eq!(a.tools.seeds, 0);
        let (mut a, s) = agent_of(2, false, true);
        req(&s, "l1", "create");
        a.step().unwrap();
        assert!(ans(&s, "l1").unwrap().starts_with(
            "error this agent makes no linux instance domains (it was started without --template"
        ));
        // Nothing was taken: both addresses are still there.
        req(&s, "u1", "create unikernel");
        req(&s, "u2", "create unikernel");
        a.step().unwrap();
        assert_eq!(ans(&s, "u2").as_deref(), Some("created 11"));
    }

    #[test]
    fn no_seed_no_unikernel_and_the_address_is_freed() {
        let (mut a, s) = agent_of(2, false, true);
        a.tools.seed_fails = true;
        req(&s, "u1", "create unikernel");
        a.step().unwrap();
        assert_eq!(
            ans(&s, "u1").as_deref(),
            Some("error seed: /dev/urandom: gone")
        );
        assert!(a.tools.configs.is_empty());
        a.tools.seed_fails = false;
        req(&s, "u2", "create unikernel");
        a.step().unwrap();
        assert!(a.tools.configs[0].contains("ip=10.0.0.5/24 "));
    }

    #[test]
    fn pvm_gone_destroys_its_domains() {
        let (mut a, s) = agent(2);
        req(&s, "a", "create");
        a.step().unwrap();
        s.0.borrow_mut().nodes.remove(&format!("{P}/name"));
        let st = a.step().unwrap();
        assert!(st.pvm_gone);
        assert_eq!(a.tools.destroyed, [DomId(10)]);
    }
}
