//! Property tests of the channel rendezvous: every offer the driver can
//! publish reads back exactly; any change to one key's value is either
//! still a valid offer or refused with an error naming the problem, never
//! a panic; the state machines never go back to a live state once closed.

use std::collections::BTreeMap;

use ins_xen::channel::{
    ChannelError, DriverSide, DriverStep, DriverView, InstanceSide, InstanceStep, Limits, Offer,
    PeerView, RingSizes, State,
};
use ins_xen::gnttab::PAGE_SIZE;
use ins_xen::{DomId, GrantRef, Port};
use proptest::prelude::*;

fn offer() -> impl Strategy<Value = Offer> {
    (1usize..700, 8u32..1_000_000, 1u32..100_000, 1u16..100).prop_map(
        |(pages, first, port, inst)| Offer {
            version: 1,
            version_min: 1,
            instance: DomId(inst),
            to_instance: RingSizes {
                capacity: 4096,
                max_frame: 1024,
            },
            to_driver: RingSizes {
                capacity: 4096,
                max_frame: 1024,
            },
            to_driver_offset: ((pages / 2) * PAGE_SIZE) as u64,
            region_len: (pages * PAGE_SIZE) as u64,
            grefs: (0..pages as u32).map(|i| GrantRef(first + i * 3)).collect(),
            port: Port(port),
        },
    )
}

fn parse(map: &BTreeMap<String, String>, me: DomId) -> Result<Offer, ChannelError> {
    Offer::parse::<()>(me, Limits { max_pages: 1024 }, |k| {
        Ok(map.get(k).map(|v| v.clone().into_bytes()))
    })
    .unwrap()
}

fn state() -> impl Strategy<Value = Option<State>> {
    prop::option::of((0u8..7).prop_map(|s| State::parse(s.to_string().as_bytes()).unwrap()))
}

proptest! {
    #[test]
    fn offers_round_trip(o in offer()) {
        let map: BTreeMap<String, String> = o.entries().into_iter().collect();
        prop_assert_eq!(parse(&map, o.instance), Ok(o));
    }

    #[test]
    fn tampered_offers_never_panic(o in offer(), which in 0usize..16, value in "[ -~]{0,40}") {
        let mut map: BTreeMap<String, String> = o.entries().into_iter().collect();
        let key = map.keys().nth(which % map.len()).unwrap().clone();
        map.insert(key, value);
        if let Ok(p) = parse(&map, o.instance) {
            // Whatever is accepted is self-consistent.
            prop_assert_eq!(p.grefs.len() as u64 * PAGE_SIZE as u64, p.region_len);
            prop_assert!(p.to_driver_offset < p.region_len);
            prop_assert!(p.grefs.iter().all(|g| g.0 >= 8));
        }
    }

    #[test]
    fn driver_never_reconnects_after_closing(views in prop::collection::vec((any::<bool>(), state(), prop::option::of(0u32..3)), 1..30)) {
        let mut d = DriverSide::new();
        let mut closed = false;
        for (present, state, version) in views {
            let view = if present { PeerView::Present { state, version } } else { PeerView::Absent };
            let step = d.on_peer(view);
            if closed {
                prop_assert!(!matches!(step, DriverStep::Connect(_)), "reconnected after closing");
            }
            if matches!(step, DriverStep::Close | DriverStep::Revoke | DriverStep::Fail(_)) {
                closed = true;
            }
            if let DriverStep::Connect(v) = step {
                prop_assert_eq!(v, 1);
            }
        }
    }

    #[test]
    fn instance_never_maps_twice(views in prop::collection::vec((any::<bool>(), state()), 1..30)) {
        let mut i = InstanceSide::new();
        let mut maps = 0;
        for (present, state) in views {
            let view = if present { DriverView::State(state) } else { DriverView::Absent };
            match i.on_driver(view) {
                InstanceStep::Map => { maps += 1; i.connected(); }
                InstanceStep::Unmap => i.closed(),
                _ => {}
            }
        }
        prop_assert!(maps <= 1);
    }
}
