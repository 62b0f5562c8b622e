use super::*;
use crate::rollout::spec::{AmountSpec, RolloutSpec, WaveSpec};
use proptest::prelude::*;

fn policy(yaml: &str) -> RolloutPolicy {
    let spec: RolloutSpec = serde_yaml_ng::from_str(yaml).unwrap();
    spec.validate().unwrap().unwrap()
}

fn problems(yaml: &str) -> Vec<String> {
    let spec: RolloutSpec = serde_yaml_ng::from_str(yaml).unwrap();
    spec.validate()
        .unwrap_err()
        .iter()
        .map(|p| p.to_string())
        .collect()
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

#[test]
fn the_issue_example_validates() {
    let p = policy(
        "batch: 10%\nmax_concurrency: 20\nwaves:\n  - { group: canary }\n  - { percent: 25, bake: 10m }\n  - { percent: 100 }\nmax_errors: 5%\nmin_sample: 10\non_halt: [revoke, kill]\n",
    );
    assert_eq!(p.batch, Amount::Percent(10.0));
    assert_eq!(p.window(1000), 20);
    assert_eq!(p.batch_size(1000), 100);
    assert_eq!(p.waves.len(), 3);
    assert_eq!(p.waves[1].bake, Duration::from_secs(600));
    assert!(p.revoke_on_halt && p.kill_on_halt);
    // The window defaults to the batch.
    assert_eq!(policy("batch: 3\n").window(12), 3);
    assert_eq!(policy("batch: 3\n").waves.len(), 1);
}

#[test]
fn the_reference_form_stays_valid_and_is_not_a_policy() {
    let spec: RolloutSpec = serde_yaml_ng::from_str(
        "strategy: wave\nwaves:\n  - { group: canary }\n  - { group: all-pcs, delay: 30m }\n",
    )
    .unwrap();
    assert_eq!(spec.validate(), Ok(None));
}

#[test]
fn bad_policies_are_named_by_field() {
    let cases = [
        ("batch: 0\n", "rollout.batch: is 0"),
        ("batch: 150%\n", "rollout.batch: 150% is not a share"),
        ("batch: lots\n", "rollout.batch: \"lots\" is neither"),
        ("max_concurrency: 0\n", "rollout.max_concurrency: is 0"),
        (
            "max_errors: 101%\n",
            "rollout.max_errors: 101% is not a share",
        ),
        (
            "waves:\n  - { group: canary }\n  - { percent: 25 }\n",
            "rollout.waves: do not cover the target",
        ),
        (
            "waves:\n  - { percent: 50 }\n  - { percent: 20 }\n  - { percent: 100 }\n",
            "below the 50",
        ),
        (
            "waves:\n  - { percent: 0 }\n  - { percent: 100 }\n",
            "percent 0 is not between",
        ),
        (
            "waves:\n  - { group: a, percent: 5 }\n  - { percent: 100 }\n",
            "exactly one of group or percent",
        ),
        (
            "waves:\n  - { percent: 100, bake: soon }\n",
            "bake \"soon\" is not a duration",
        ),
        (
            "waves:\n  - { percent: 100, delay: 5m }\n",
            "delay belongs to strategy: wave",
        ),
        ("on_halt: [reboot]\n", "\"reboot\" is not an action"),
        ("start_within: 10ms\n", "at least 1s"),
        ("start_within: 1000000years\n", "longer than 30 days"),
        (
            "waves:\n  - { percent: 100, bake: 400d }\n",
            "longer than 30 days",
        ),
        ("strategy: canary\n", "\"canary\" is not a strategy"),
        ("strategy: wave\nbatch: 3\n", "leave strategy out"),
        (
            "strategy: wave\nwaves:\n  - { delay: 5m }\n",
            "wave 1 names no group",
        ),
    ];
    for (yaml, expected) in cases {
        let found = problems(yaml);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{yaml:?}: {found:?} lacks {expected:?}"
        );
    }
    // Several problems are all reported.
    assert_eq!(problems("batch: 0\nmax_errors: 200%\n").len(), 2);
    assert!(serde_yaml_ng::from_str::<RolloutSpec>("bacth: 3\n").is_err());
}

#[test]
fn amounts_read_counts_and_percentages() {
    let spec = RolloutSpec {
        batch: Some(AmountSpec::Text("7".into())),
        max_errors: Some(AmountSpec::Text("2.5%".into())),
        waves: vec![WaveSpec {
            percent: Some(100),
            ..WaveSpec::default()
        }],
        ..RolloutSpec::default()
    };
    let p = spec.validate().unwrap().unwrap();
    assert_eq!(p.batch, Amount::Count(7));
    assert_eq!(p.max_errors, Some(Amount::Percent(2.5)));
    assert_eq!(Amount::Percent(5.0).of(10_000), 500);
    assert_eq!(Amount::Percent(10.0).of(3), 1);
}

#[test]
fn a_count_budget_halts_on_the_result_past_it() {
    let p = policy("batch: 3\nmax_errors: 1\n");
    assert_eq!(breach(&p, 0, 5), None);
    assert_eq!(breach(&p, 1, 5), None);
    assert_eq!(
        breach(&p, 2, 6).as_deref(),
        Some("2 errors of 6 results > 1")
    );
    // Zero tolerance halts on the first failure.
    assert!(breach(&policy("max_errors: 0\n"), 1, 1).is_some());
    // No budget never halts.
    assert_eq!(breach(&policy("batch: 3\n"), 1000, 1000), None);
}

#[test]
fn a_percentage_budget_waits_for_its_sample() {
    let p = policy("batch: 10%\nmax_errors: 5%\nmin_sample: 10\n");
    assert_eq!(breach(&p, 3, 9), None, "below the sample");
    assert_eq!(
        breach(&p, 5, 37).as_deref(),
        Some("5 errors of 37 results > 5%")
    );
    assert_eq!(breach(&p, 1, 20), None, "exactly 5% is within");
    assert!(breach(&p, 2, 20).is_some());
}

#[test]
fn waves_take_groups_then_shares() {
    let p = policy("waves:\n  - { group: canary }\n  - { percent: 50 }\n  - { percent: 100 }\n");
    let groups: Vec<Vec<String>> = (0..10)
        .map(|n| {
            if n == 7 || n == 9 {
                vec!["canary".into()]
            } else {
                vec![]
            }
        })
        .collect();
    let waves = assign_waves(&groups, &p.waves);
    assert_eq!(waves[7], 0);
    assert_eq!(waves[9], 0);
    // 50% of 10 = 5 counted from the first wave: 2 canaries + 3 more.
    assert_eq!(waves.iter().filter(|w| **w == 1).count(), 3);
    assert_eq!(waves.iter().filter(|w| **w == 2).count(), 5);
    assert_eq!(&waves[..3], &[1, 1, 1]);
}

fn view(pending: u64, online: u64, in_flight: u64) -> View {
    View {
        total: 12,
        wave: 0,
        pending,
        pending_online: online,
        in_flight,
        in_flight_wave: in_flight,
        wave_finished_at: None,
        judged: 0,
        now: at(0),
    }
}

#[test]
fn the_window_slides() {
    let p = policy("batch: 3\n");
    assert_eq!(next_step(&p, &view(12, 12, 0)), Step::Dispatch(3));
    assert_eq!(next_step(&p, &view(9, 9, 3)), Step::Wait);
    assert_eq!(next_step(&p, &view(9, 9, 1)), Step::Dispatch(2));
    let wide = policy("batch: 2\nmax_concurrency: 5\n");
    assert_eq!(next_step(&wide, &view(12, 12, 0)), Step::Dispatch(2));
    assert_eq!(next_step(&wide, &view(10, 10, 4)), Step::Dispatch(1));
    // Only online targets are dispatched.
    assert_eq!(next_step(&p, &view(9, 1, 0)), Step::Dispatch(1));
}

#[test]
fn a_percentage_budget_starts_slow() {
    let p = policy("batch: 500\nmax_errors: 2%\nmin_sample: 10\n");
    assert_eq!(effective_window(&p, 10_000, 0), 10);
    assert_eq!(effective_window(&p, 10_000, 9), 18);
    assert_eq!(effective_window(&p, 10_000, 100), 200);
    assert_eq!(effective_window(&p, 10_000, 5_000), 500);
    let mut v = view(10_000, 10_000, 0);
    v.total = 10_000;
    assert_eq!(next_step(&p, &v), Step::Dispatch(10));
    v.judged = 40;
    v.in_flight = 10;
    assert_eq!(next_step(&p, &v), Step::Dispatch(70));
    // A count budget (or none) uses the window at once.
    let counted = policy("batch: 500\nmax_errors: 5\n");
    assert_eq!(effective_window(&counted, 10_000, 0), 500);
}

#[test]
fn offline_targets_do_not_hold_the_window() {
    let p = policy("batch: 3\n");
    assert_eq!(next_step(&p, &view(2, 0, 1)), Step::Wait);
    assert_eq!(next_step(&p, &view(2, 0, 0)), Step::GiveUpOffline);
}

#[test]
fn waves_finish_bake_and_advance() {
    let p = policy("waves:\n  - { group: canary, bake: 10m }\n  - { percent: 100 }\n");
    let mut v = view(0, 0, 0);
    assert_eq!(next_step(&p, &v), Step::WaveFinished);
    v.wave_finished_at = Some(at(0));
    v.now = at(60);
    assert_eq!(next_step(&p, &v), Step::Bake(at(600)));
    v.now = at(600);
    assert_eq!(next_step(&p, &v), Step::NextWave);
    v.wave = 1;
    assert_eq!(next_step(&p, &v), Step::Complete);
}

proptest! {
    /// Whatever the counts, a step never puts more in flight than the
    /// window, and never dispatches more than are online.
    #[test]
    fn a_step_never_overfills_the_window(
        batch in 1u64..50, window in 1u64..50, total in 1u64..500,
        pending in 0u64..500, online_share in 0u64..=100, in_flight in 0u64..60,
    ) {
        let p = policy(&format!("batch: {batch}\nmax_concurrency: {window}\n"));
        let online = pending * online_share / 100;
        let v = View { total, wave: 0, pending, pending_online: online, in_flight, in_flight_wave: in_flight, wave_finished_at: None, judged: pending / 3, now: at(0) };
        if let Step::Dispatch(n) = next_step(&p, &v) {
            prop_assert!(n >= 1);
            prop_assert!(in_flight + n <= window);
            prop_assert!(n <= batch && n <= online);
        }
    }

    /// Every target gets exactly one wave, and group waves hold only their
    /// group.
    #[test]
    fn every_target_gets_one_wave(n in 0usize..200, canary_every in 1usize..20, share in 1u32..100) {
        let p = policy(&format!("waves:\n  - {{ group: canary }}\n  - {{ percent: {share} }}\n  - {{ percent: 100 }}\n"));
        let groups: Vec<Vec<String>> = (0..n).map(|i| if i % canary_every == 0 { vec!["canary".into()] } else { vec![] }).collect();
        let waves = assign_waves(&groups, &p.waves);
        prop_assert_eq!(waves.len(), n);
        for (i, w) in waves.iter().enumerate() {
            prop_assert!(*w < 3);
            prop_assert_eq!(*w == 0, i % canary_every == 0);
        }
    }
}
