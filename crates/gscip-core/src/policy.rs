//! The policy of SPEC section 3: what every GE on a path does with a flow, as a pure function
//! of the authenticated path information. Every GE evaluates it itself.

use crate::group::GroupId;
use gscip_wire::dprp::{Mode, Side};

/// One GE on a flow's path, as authenticated by the negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGe {
    pub name: String,
    pub mode: Mode,
    /// Relative to the flow's direction (source to destination).
    pub side: Side,
    /// Groups whose membership is proven.
    pub groups: Vec<GroupId>,
}

/// What one GE does with a flow, for the source-to-destination direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowAction {
    /// It encrypts this direction (and decrypts the return direction).
    Encrypt,
    /// It decrypts this direction (and encrypts the return direction).
    Decrypt,
    /// It passes the protected flow unchanged.
    Relay,
    /// It passes the flow in plaintext across its boundary.
    Plain,
    /// It drops the flow.
    Discard,
}

impl FlowAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowAction::Encrypt => "encrypt",
            FlowAction::Decrypt => "decrypt",
            FlowAction::Relay => "relay",
            FlowAction::Plain => "plain",
            FlowAction::Discard => "discard",
        }
    }
    /// The same GE's action for the other direction of the flow.
    pub fn reversed(self) -> FlowAction {
        match self {
            FlowAction::Encrypt => FlowAction::Decrypt,
            FlowAction::Decrypt => FlowAction::Encrypt,
            other => other,
        }
    }
}

/// The flow's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Indices into the path of the pair, and the group used.
    Protected {
        encryptor: usize,
        decryptor: usize,
        group: GroupId,
    },
    Plaintext,
    /// Index of the GE that drops it: the first one the flow meets.
    Discarded {
        at: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// One action per path element, in path order.
    pub actions: Vec<FlowAction>,
}

fn lowest_common(a: &[GroupId], b: &[GroupId]) -> Option<GroupId> {
    a.iter().filter(|g| b.contains(g)).min().copied()
}

/// Decides a flow from its path, listed from the source to the destination.
///
/// Source-side GEs are taken innermost first (path order) and destination-side GEs outermost
/// first (path order), as SPEC section 3 writes them.
pub fn decide(path: &[PathGe]) -> Decision {
    let a: Vec<usize> = (0..path.len()).filter(|&k| path[k].side == Side::Source).collect();
    let b: Vec<usize> = (0..path.len()).filter(|&k| path[k].side == Side::Destination).collect();
    let n = b.len();
    let is_open = |k: &usize| path[*k].mode == Mode::Open;

    let mut any_candidate = false;
    // (depth, group, sorted names, ai, bj): the first three order the candidates.
    type Candidate<'p> = (usize, GroupId, (&'p str, &'p str), usize, usize);
    let mut best: Option<Candidate<'_>> = None;
    for (ii, &ai) in a.iter().enumerate() {
        for (jj, &bj) in b.iter().enumerate() {
            let Some(group) = lowest_common(&path[ai].groups, &path[bj].groups) else { continue };
            any_candidate = true;
            let admissible = a[..ii].iter().all(is_open) && b[jj + 1..].iter().all(is_open);
            if !admissible {
                continue;
            }
            let depth = (ii + 1) + (n - (jj + 1));
            let (x, y) = (path[ai].name.as_str(), path[bj].name.as_str());
            let names = if x <= y { (x, y) } else { (y, x) };
            let key = (depth, group, names, ai, bj);
            if best.as_ref().is_none_or(|b| (key.0, key.1, key.2) < (b.0, b.1, b.2)) {
                best = Some(key);
            }
        }
    }

    if let Some((_, group, _, ai, bj)) = best {
        let actions = (0..path.len())
            .map(|k| match k {
                _ if k == ai => FlowAction::Encrypt,
                _ if k == bj => FlowAction::Decrypt,
                _ if k < ai || k > bj => FlowAction::Plain,
                _ => FlowAction::Relay,
            })
            .collect();
        return Decision { outcome: Outcome::Protected { encryptor: ai, decryptor: bj, group }, actions };
    }
    let all_sides_open = a.iter().chain(b.iter()).all(is_open);
    if !any_candidate && all_sides_open {
        Decision { outcome: Outcome::Plaintext, actions: vec![FlowAction::Plain; path.len()] }
    } else {
        Decision { outcome: Outcome::Discarded { at: 0 }, actions: vec![FlowAction::Discard; path.len()] }
    }
}

/// The path as seen from the other end: reversed, sides swapped.
pub fn reverse_path(path: &[PathGe]) -> Vec<PathGe> {
    path.iter()
        .rev()
        .map(|g| PathGe {
            side: match g.side {
                Side::Source => Side::Destination,
                Side::Destination => Side::Source,
                Side::Transit => Side::Transit,
            },
            ..g.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use FlowAction::*;

    fn ge(name: &str, mode: Mode, side: Side, groups: &[u16]) -> PathGe {
        PathGe { name: name.into(), mode, side, groups: groups.iter().map(|&g| GroupId(g)).collect() }
    }
    use Mode::{Closed as CL, Open as OP};
    use Side::{Destination as D, Source as S, Transit as T};

    /// Every worked example of SPEC section 3 (seed 001, Fig. 6).
    #[test]
    fn spec_section_3_table() {
        let gen = |side| ge("gen", CL, side, &[1]);
        let gea = || ge("gea", CL, D, &[2, 3]);
        let cases: Vec<(&str, Vec<PathGe>, Outcome, Vec<FlowAction>)> = vec![
            (
                "GES2 -> server: GES2 encrypts with group 2, GEN relays, GEA decrypts",
                vec![ge("ges2", OP, S, &[1, 2]), gen(S), gea()],
                Outcome::Protected { encryptor: 0, decryptor: 2, group: GroupId(2) },
                vec![Encrypt, Relay, Decrypt],
            ),
            (
                "GES3 -> server: group 3",
                vec![ge("ges3", OP, S, &[3]), gea()],
                Outcome::Protected { encryptor: 0, decryptor: 1, group: GroupId(3) },
                vec![Encrypt, Decrypt],
            ),
            (
                "GES1 -> server: discarded",
                vec![ge("ges1", OP, S, &[1]), gen(S), gea()],
                Outcome::Discarded { at: 0 },
                vec![Discard; 3],
            ),
            ("Term -> server: discarded", vec![gen(S), gea()], Outcome::Discarded { at: 0 }, vec![Discard; 2]),
            (
                "GES1 -> GES3: discarded (GEN is CL)",
                vec![ge("ges1", OP, S, &[1]), gen(S), ge("ges3", OP, D, &[3])],
                Outcome::Discarded { at: 0 },
                vec![Discard; 3],
            ),
            (
                "Term -> GES4: GEN encrypts with group 1",
                vec![gen(S), ge("ges4", OP, D, &[1])],
                Outcome::Protected { encryptor: 0, decryptor: 1, group: GroupId(1) },
                vec![Encrypt, Decrypt],
            ),
            ("GES1 -> Term on the same LAN: plaintext", vec![ge("ges1", OP, S, &[1])], Outcome::Plaintext, vec![Plain]),
            (
                "GES2 moved to NET1 -> server: still group 2",
                vec![ge("ges2", OP, S, &[1, 2]), gea()],
                Outcome::Protected { encryptor: 0, decryptor: 1, group: GroupId(2) },
                vec![Encrypt, Decrypt],
            ),
        ];
        for (what, path, outcome, actions) in cases {
            let d = decide(&path);
            assert_eq!(d.outcome, outcome, "{what}");
            assert_eq!(d.actions, actions, "{what}");
        }
    }

    #[test]
    fn inner_open_ge_lets_outer_pair_protect_and_sees_plaintext() {
        // ges{2} OP inside gen{1} CL; peer gea{1}: ges shares nothing with gea, gen does.
        let path = vec![ge("ges", OP, S, &[2]), ge("gen", CL, S, &[1]), ge("gea", CL, D, &[1])];
        let d = decide(&path);
        assert_eq!(d.outcome, Outcome::Protected { encryptor: 1, decryptor: 2, group: GroupId(1) });
        assert_eq!(d.actions, vec![Plain, Encrypt, Decrypt]);
    }

    #[test]
    fn inner_closed_ge_forbids_outer_pair() {
        let path = vec![ge("ges", CL, S, &[2]), ge("gen", CL, S, &[1]), ge("gea", CL, D, &[1])];
        assert_eq!(decide(&path).outcome, Outcome::Discarded { at: 0 });
    }

    #[test]
    fn transit_relays_a_group_it_does_not_hold_and_does_not_vote() {
        let path = vec![ge("a", OP, S, &[5]), ge("t", CL, T, &[9]), ge("b", OP, D, &[5])];
        let d = decide(&path);
        assert_eq!(d.actions, vec![Encrypt, Relay, Decrypt]);
        let path = vec![ge("a", OP, S, &[5]), ge("t", CL, T, &[9]), ge("b", OP, D, &[6])];
        assert_eq!(decide(&path).outcome, Outcome::Plaintext, "a closed transit GE does not vote");
    }

    #[test]
    fn ties_go_to_lower_group_then_names() {
        // Two pairs of equal depth cannot both exist with distinct ends... but two groups can.
        let path = vec![ge("a", OP, S, &[7, 3]), ge("b", OP, D, &[3, 7])];
        assert_eq!(decide(&path).outcome, Outcome::Protected { encryptor: 0, decryptor: 1, group: GroupId(3) });
        // Depth tie between (a1,b1) and (a2,b2) where n=2: depth(a1,b1)=1+1=2, depth(a2,b2)=2+0=2.
        let path = vec![ge("zz", OP, S, &[4]), ge("aa", OP, S, &[5]), ge("bb", OP, D, &[4]), ge("yy", OP, D, &[5])];
        let d = decide(&path);
        assert_eq!(d.outcome, Outcome::Protected { encryptor: 0, decryptor: 2, group: GroupId(4) });
    }

    fn arb_path() -> impl Strategy<Value = Vec<PathGe>> {
        proptest::collection::vec((any::<bool>(), 0u8..3, proptest::collection::btree_set(1u16..5, 0..3)), 0..7)
            .prop_map(|v| {
                let mut v: Vec<_> = v
                    .into_iter()
                    .enumerate()
                    .map(|(k, (open, side, gs))| {
                        ge(
                            &format!("ge{k}"),
                            if open { OP } else { CL },
                            match side {
                                0 => S,
                                1 => T,
                                _ => D,
                            },
                            &gs.into_iter().collect::<Vec<_>>(),
                        )
                    })
                    .collect();
                // Paths run source-side, transit, destination-side.
                v.sort_by_key(|g| match g.side {
                    S => 0,
                    T => 1,
                    D => 2,
                });
                v
            })
    }

    proptest! {
        #[test]
        fn both_directions_agree(path in arb_path()) {
            let fwd = decide(&path);
            let rev = decide(&reverse_path(&path));
            let n = path.len();
            let mirrored: Vec<FlowAction> = rev.actions.iter().rev().map(|a| a.reversed()).collect();
            prop_assert_eq!(&fwd.actions, &mirrored);
            match (fwd.outcome, rev.outcome) {
                (Outcome::Protected { encryptor, decryptor, group }, Outcome::Protected { encryptor: e2, decryptor: d2, group: g2 }) => {
                    prop_assert_eq!((encryptor, decryptor, group), (n - 1 - d2, n - 1 - e2, g2));
                }
                (Outcome::Plaintext, Outcome::Plaintext) | (Outcome::Discarded { .. }, Outcome::Discarded { .. }) => {}
                (f, r) => { let msg = format!("{f:?} vs {r:?}"); prop_assert!(false, "{}", msg); }
            }
        }

        #[test]
        fn no_closed_boundary_is_crossed_in_plaintext(path in arb_path()) {
            let d = decide(&path);
            for (g, a) in path.iter().zip(&d.actions) {
                if g.mode == CL && g.side != T {
                    prop_assert_ne!(*a, Plain, "{} is closed", g.name);
                }
            }
            if let Outcome::Protected { encryptor, decryptor, group } = d.outcome {
                prop_assert!(path[encryptor].groups.contains(&group) && path[decryptor].groups.contains(&group));
                prop_assert_eq!(path[encryptor].side, S);
                prop_assert_eq!(path[decryptor].side, D);
            }
        }

        #[test]
        fn adding_a_group_never_turns_protected_into_discarded(path in arb_path(), k: usize, g in 1u16..6) {
            prop_assume!(!path.is_empty());
            let before = decide(&path);
            let mut more = path.clone();
            let k = k % more.len();
            if !more[k].groups.contains(&GroupId(g)) {
                more[k].groups.push(GroupId(g));
                more[k].groups.sort();
            }
            let after = decide(&more);
            if matches!(before.outcome, Outcome::Protected { .. }) {
                let still_protected = matches!(after.outcome, Outcome::Protected { .. });
                prop_assert!(still_protected, "became {:?}", after.outcome);
            }
        }

        #[test]
        fn deterministic(path in arb_path()) {
            prop_assert_eq!(decide(&path), decide(&path.clone()));
        }
    }
}
