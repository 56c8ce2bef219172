//! The simulated clients: each appends to random contexts, one logical append at a time,
//! through the node it believes leads; most appends carry an idempotency key and are
//! retried (elsewhere, on no answer) until acknowledged; keyless ones are abandoned when
//! their outcome is unknown.

use super::checker::{Ack, Violation};
use super::node::ClientAppend;
use super::{Event, Sim, CLIENT_TIMEOUT_US};
use crate::consensus::member::Outcome;
use rand::Rng;

/// A node's answer to a client's attempt `request`.
pub(super) struct Reply {
    pub(super) client: usize,
    pub(super) request: u64,
    pub(super) answer: Outcome,
}

pub(super) struct Client {
    /// The logical append in progress: (number, context, payload, key), with its attempt.
    pub(super) current: Option<(u64, String, String, String)>,
    pub(super) request: u64,
    pub(super) next_op: u64,
    pub(super) leader_guess: usize,
}

impl Sim {
    pub(super) fn client_next(&mut self, c: usize) {
        // Clients go on through the first half of the settling time: the healed group must
        // make progress.
        if self.now_us >= self.active_us() + self.cfg.settle.as_micros() as u64 / 2 {
            return;
        }
        let client = &mut self.clients[c];
        client.next_op += 1;
        let op = client.next_op;
        let context = format!("ctx-{}", self.rng.random_range(0..self.cfg.contexts));
        let payload = format!("client {c} append {op}");
        // One append in five carries no key: it is never retried (its outcome may stay
        // unknown), so it must never be stored twice either.
        let key = if self.rng.random_bool(0.8) {
            format!("c{c}-{op}")
        } else {
            String::new()
        };
        self.clients[c].current = Some((op, context, payload, key));
        self.client_retry(c);
    }

    pub(super) fn client_retry(&mut self, c: usize) {
        let Some((_, context, payload, key)) = self.clients[c].current.clone() else {
            return;
        };
        self.attempts += 1;
        let client = &mut self.clients[c];
        client.request += 1;
        let req = ClientAppend {
            client: c,
            request: client.request,
            context,
            payload,
            idempotency_key: key,
        };
        let node = client.leader_guess;
        let request = client.request;
        let delay = self.rng.random_range(100..2_000);
        self.at(delay, Event::Request { node, req });
        self.at(
            CLIENT_TIMEOUT_US,
            Event::ClientTimeout { client: c, request },
        );
    }

    pub(super) fn client_answer(&mut self, reply: Reply) {
        let c = reply.client;
        if self.clients[c].request != reply.request || self.clients[c].current.is_none() {
            return; // a late answer to an attempt the client gave up on
        }
        let (op, context, payload, key) = self.clients[c].current.clone().expect("checked");
        match reply.answer {
            Outcome::Acked { entry, duplicate } => {
                if entry.payload.as_ref() != payload.as_bytes() {
                    self.violations.push(Violation::WrongAck {
                        context: context.clone(),
                        detail: format!(
                            "client {c} append {op} (key {key:?}) was answered with sequence {} holding another payload",
                            entry.sequence
                        ),
                    });
                }
                self.acks.push(Ack {
                    context,
                    sequence: entry.sequence,
                    content_hash: entry.content_hash,
                    duplicate,
                    at_us: self.now_us,
                });
                self.clients[c].current = None;
                let think = self.rng.random_range(0..5_000);
                self.at(think, Event::ClientNext(c));
            }
            Outcome::NotLeader { hint } => {
                let n = self.nodes.len();
                self.clients[c].leader_guess = if hint == 0 {
                    self.rng.random_range(0..n)
                } else {
                    hint as usize - 1
                };
                self.retry_or_give_up(c, key.is_empty(), 5_000);
            }
            Outcome::Retry(_) => self.retry_or_give_up(c, key.is_empty(), 5_000),
            Outcome::Failed(e) => {
                self.violations.push(Violation::WrongAck {
                    context,
                    detail: format!("client {c} append {op} (key {key:?}) was refused: {e}"),
                });
                self.clients[c].current = None;
                self.at(1_000, Event::ClientNext(c));
            }
        }
    }

    /// A keyless append whose outcome is unknown is abandoned; a keyed one is retried.
    pub(super) fn retry_or_give_up(&mut self, c: usize, keyless: bool, delay: u64) {
        if keyless {
            self.clients[c].current = None;
            self.at(delay, Event::ClientNext(c));
        } else {
            // The retry goes out after `delay`; the request counter moves now so that an
            // answer to the previous attempt is ignored.
            self.clients[c].request += 1;
            let request = self.clients[c].request;
            self.at(delay, Event::ClientRetry { client: c, request });
        }
    }
}
