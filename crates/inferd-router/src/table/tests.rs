use super::*;

fn addr(port: u16) -> ReplicaAddr {
    ReplicaAddr::http_only(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn compile_with(table: &RouteTable, old: &Compiled, stats: &mut Stats) -> Compiled {
    match Compiled::compile(table, old, stats, &Metrics::new()) {
        Ok(compiled) => compiled,
        Err(e) => panic!("table refused: {e}"),
    }
}

fn compile(route: ServiceRoute) -> Result<Compiled, RouteError> {
    Compiled::compile(
        &RouteTable::new().with_service("m", route),
        &Compiled::default(),
        &mut Stats::default(),
        &Metrics::new(),
    )
}

fn compiled(route: ServiceRoute) -> Compiled {
    compile_with(
        &RouteTable::new().with_service("m", route),
        &Compiled::default(),
        &mut Stats::default(),
    )
}

#[test]
fn weights_must_sum_to_100_over_routable_revisions() {
    let bad = ServiceRoute::new()
        .with_revision(RevisionRoute::new("a", 50, vec![addr(1)]))
        .with_revision(RevisionRoute::new("b", 40, vec![addr(2)]));
    assert!(matches!(
        compile(bad),
        Err(RouteError::WeightSum { sum: 90, .. })
    ));
    // A serving revision with no replica does not count.
    let ok = ServiceRoute::new()
        .with_revision(RevisionRoute::new("a", 100, vec![addr(1)]))
        .with_revision(RevisionRoute::new("b", 40, vec![]));
    assert!(compile(ok).is_ok());
    // Nothing routable: any weights.
    let none = ServiceRoute::new().with_revision(RevisionRoute::new("a", 30, vec![]));
    assert!(compile(none).is_ok());
    // An activating revision counts, replicas or not.
    let activating = ServiceRoute::new()
        .with_revision(RevisionRoute::new("a", 100, vec![addr(1)]))
        .with_revision(RevisionRoute::new("b", 40, vec![]).with_state(RevisionState::Activating));
    assert!(matches!(
        compile(activating),
        Err(RouteError::WeightSum { sum: 140, .. })
    ));
    let split = ServiceRoute::new()
        .with_revision(RevisionRoute::new("a", 60, vec![addr(1)]))
        .with_revision(RevisionRoute::new("b", 40, vec![]).with_state(RevisionState::Activating));
    assert!(compile(split).is_ok());
    // An unavailable revision does not count, replicas or not.
    let unavailable = ServiceRoute::new()
        .with_revision(RevisionRoute::new("a", 100, vec![addr(1)]))
        .with_revision(
            RevisionRoute::new("b", 50, vec![addr(2)])
                .with_state(RevisionState::Unavailable("no model".into())),
        );
    assert!(compile(unavailable).is_ok());
}

#[test]
fn refuses_malformed_tables() {
    let dup = ServiceRoute::new()
        .with_revision(RevisionRoute::new("a", 100, vec![addr(1)]))
        .with_revision(RevisionRoute::new("a", 0, vec![addr(2)]));
    assert!(matches!(
        compile(dup),
        Err(RouteError::DuplicateRevision { .. })
    ));
    let over = ServiceRoute::new().with_revision(RevisionRoute::new("a", 101, vec![]));
    assert!(matches!(
        compile(over),
        Err(RouteError::PercentOver100 { .. })
    ));
    let tag = ServiceRoute::new()
        .with_revision(RevisionRoute::new("a", 100, vec![addr(1)]))
        .with_tags(Some("zz"), None);
    assert!(matches!(compile(tag), Err(RouteError::UnknownTag { .. })));
    let zero = ServiceRoute::new().with_timeout(Duration::ZERO);
    assert!(matches!(compile(zero), Err(RouteError::ZeroTimeout { .. })));
    let empty = ServiceRoute::new().with_revision(RevisionRoute::new("", 100, vec![]));
    assert!(matches!(
        compile(empty),
        Err(RouteError::EmptyRevisionName { .. })
    ));
}

#[test]
fn a_refused_table_adds_no_statistics() {
    let mut stats = Stats::default();
    let table = RouteTable::new()
        .with_service(
            "good",
            ServiceRoute::new().with_revision(RevisionRoute::new("a", 100, vec![addr(1)])),
        )
        .with_service(
            "bad",
            ServiceRoute::new().with_revision(RevisionRoute::new("a", 50, vec![addr(2)])),
        );
    let refused = Compiled::compile(&table, &Compiled::default(), &mut stats, &Metrics::new());
    assert!(refused.is_err());
    assert!(stats.find("good", "a").is_none());
}

#[test]
fn counters_survive_a_replacement() {
    let route = |replicas| {
        RouteTable::new().with_service(
            "m",
            ServiceRoute::new().with_revision(RevisionRoute::new("a", 100, replicas)),
        )
    };
    let mut stats = Stats::default();
    let first = compile_with(&route(vec![addr(1)]), &Compiled::default(), &mut stats);
    let revision = &first.services["m"].revisions[0];
    let Ok(_held) = revision.acquire(&Rng::new(1), Wire::Http, None) else {
        panic!("no slot");
    };
    // The same HTTP address with a gRPC address added is the same replica.
    let with_grpc = ReplicaAddr::new(addr(1).http, Some(addr(9).http));
    let second = compile_with(&route(vec![with_grpc, addr(2)]), &first, &mut stats);
    let revision = &second.services["m"].revisions[0];
    let counts: Vec<usize> = revision.replicas.iter().map(|r| r.in_flight()).collect();
    assert_eq!(counts, vec![1, 0]);
    assert_eq!(revision.replicas[0].addr.grpc, Some(addr(9).http));
    assert_eq!(revision.stats.in_flight(), 1);
    assert!(Arc::ptr_eq(
        &revision.stats,
        &first.services["m"].revisions[0].stats
    ));
}

#[test]
fn p2c_prefers_the_less_loaded_and_honours_exclude() {
    let c = compiled(ServiceRoute::new().with_revision(RevisionRoute::new(
        "a",
        100,
        vec![addr(1), addr(2)],
    )));
    let revision = &c.services["m"].revisions[0];
    let rng = Rng::new(3);
    let Ok(busy) = revision.acquire(&rng, Wire::Http, None) else {
        panic!("no slot");
    };
    let busy_addr = busy.replica().addr;
    for _ in 0..50 {
        let Ok(picked) = revision.acquire(&rng, Wire::Http, None) else {
            panic!("no slot");
        };
        assert_ne!(picked.replica().addr, busy_addr);
    }
    let Ok(other) = revision.acquire(&rng, Wire::Http, Some(busy.replica())) else {
        panic!("no slot");
    };
    assert_ne!(other.replica().addr, busy_addr);
    drop(other);
    let only = revision.acquire(&rng, Wire::Http, Some(&revision.replicas[0]));
    assert_eq!(only.map(|s| s.replica().addr).ok(), Some(addr(2)));
}

#[test]
fn container_concurrency_caps_each_replica() {
    let c = compiled(ServiceRoute::new().with_revision(
        RevisionRoute::new("a", 100, vec![addr(1), addr(2)]).with_container_concurrency(2),
    ));
    let revision = &c.services["m"].revisions[0];
    let rng = Rng::new(5);
    let slots: Vec<InFlight> = (0..4)
        .map(|_| match revision.acquire(&rng, Wire::Http, None) {
            Ok(slot) => slot,
            Err(e) => panic!("no slot: {e:?}"),
        })
        .collect();
    let counts: Vec<usize> = revision.replicas.iter().map(|r| r.in_flight()).collect();
    assert_eq!(counts, vec![2, 2]);
    assert_eq!(
        revision.acquire(&rng, Wire::Http, None).err(),
        Some(NoSlot::AllBusy)
    );
    drop(slots);
    assert_eq!(revision.stats.in_flight(), 0);
    assert!(revision.acquire(&rng, Wire::Http, None).is_ok());
}

#[test]
fn grpc_skips_replicas_without_a_grpc_address() {
    let grpc = ReplicaAddr::new(addr(2).http, Some(addr(3).http));
    let c = compiled(ServiceRoute::new().with_revision(RevisionRoute::new(
        "a",
        100,
        vec![addr(1), grpc],
    )));
    let revision = &c.services["m"].revisions[0];
    let rng = Rng::new(6);
    for _ in 0..20 {
        let slot = revision.acquire(&rng, Wire::Grpc, None);
        assert_eq!(slot.map(|s| s.replica().addr).ok(), Some(grpc));
    }
    let http_only =
        compiled(ServiceRoute::new().with_revision(RevisionRoute::new("a", 100, vec![addr(1)])));
    let revision = &http_only.services["m"].revisions[0];
    assert_eq!(
        revision.acquire(&rng, Wire::Grpc, None).err(),
        Some(NoSlot::NoReplica)
    );
}

#[test]
fn weighted_choice_skips_unroutable_revisions() {
    let c = compiled(
        ServiceRoute::new()
            .with_revision(RevisionRoute::new("serving", 50, vec![addr(1)]))
            .with_revision(
                RevisionRoute::new("cold", 50, vec![]).with_state(RevisionState::Activating),
            )
            .with_revision(RevisionRoute::new("empty", 30, vec![]))
            .with_revision(
                RevisionRoute::new("broken", 30, vec![addr(2)])
                    .with_state(RevisionState::Unavailable("bad".into())),
            ),
    );
    let service = &c.services["m"];
    let rng = Rng::new(7);
    let mut counts = [0u32; 4];
    for _ in 0..1000 {
        let Some(i) = service.pick_revision(&rng) else {
            panic!("nothing picked");
        };
        counts[i] += 1;
    }
    assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
    assert!((400..=600).contains(&counts[0]), "{counts:?}");
    assert!(service.is_routable());
    assert_eq!(service.unavailable(), Some(("broken", "bad")));
}
