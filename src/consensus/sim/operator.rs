//! The simulated operator: changes the group's members one step at a time (add the spare
//! as a learner, promote it once caught up, remove a voter — handing the leadership over
//! first when that voter leads), under whatever faults the run has.

use super::node::NodeOutput;
use super::{Event, Sim};
use crate::consensus::member::MembershipChange;

impl Sim {
    /// One step of the membership plan: find the leader; if the current change is in its
    /// configuration, move on; otherwise propose it (a promotion only once the learner has
    /// caught up), and look again soon.
    pub(super) fn operator(&mut self) {
        let Some(&change) = self.plan.get(self.plan_done) else {
            return;
        };
        let leader = (0..self.nodes.len())
            .find(|&i| !self.nodes[i].paused && self.nodes[i].is_writing_leader());
        if let Some(l) = leader {
            let cs = self.nodes[l].conf_state().expect("a leader is up");
            let done = match change {
                MembershipChange::AddLearner(id) => {
                    cs.learners.contains(&id) || cs.voters.contains(&id)
                }
                MembershipChange::Promote(id) => cs.voters.contains(&id),
                MembershipChange::Remove(id) => {
                    !cs.voters.contains(&id) && !cs.learners.contains(&id)
                }
            };
            if done {
                if self.debug {
                    eprintln!("{} µs: done {change:?}", self.now_us);
                }
                self.plan_done += 1;
                self.at(50_000, Event::Operator);
                return;
            }
            if change == MembershipChange::Remove(l as u64 + 1) {
                // A leader is not removed: it hands over first.
                if let Some(&to) = cs.voters.iter().find(|&&v| v != l as u64 + 1) {
                    let mut out = NodeOutput::default();
                    self.nodes[l].transfer_leadership(to, &mut out);
                    self.emit(l, out);
                }
                self.at(30_000, Event::Operator);
                return;
            }
            let ready = match change {
                MembershipChange::Promote(id) => self.nodes[l].caught_up(id),
                _ => true,
            };
            if ready {
                let mut out = NodeOutput::default();
                self.nodes[l].propose_membership(change, &mut out);
                self.emit(l, out);
            }
        }
        self.at(30_000, Event::Operator);
    }
}
