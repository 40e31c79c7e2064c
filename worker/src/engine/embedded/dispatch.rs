//! Activity dispatch: runs one attempt on the tokio runtime, at most
//! `max_concurrent` at once, through its dependency's breaker and with the
//! step's time limit ([`Registry::attempt`]), and sends its result back to
//! the core exactly once (a panic or cancellation is a retryable error).
//!
//! Calls beyond the limit wait in a queue of their own, in order, not as
//! spawned tasks, and with their input held as compact JSON text: at
//! 10,000 sagas in flight and 512 slots, a task per waiting call (2 KB) and
//! the input's maps (the order and every earlier output, 4 KB) were a
//! third of the worker's heap. A call that finds a free slot runs at once,
//! as it is.

use super::api::Msg;
use super::state::Input;
use sagaflow_activities::clock::now_ms;
use sagaflow_activities::Registry;
use sagaflow_workflows::{ActivityCall, ActivityError};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

/// Runs activity attempts for the core.
pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
}

/// What the dispatcher and its running attempts share.
struct Shared {
    tx: Sender<Msg>,
    registry: Arc<Registry>,
    runtime: tokio::runtime::Handle,
    slots: Mutex<Slots>,
}

/// Free slots and the calls waiting for one (never both: a call waits
/// only while no slot is free).
struct Slots {
    free: usize,
    waiting: VecDeque<Waiting>,
}

/// A call waiting for a slot, its input as JSON text.
struct Waiting {
    saga_id: Arc<str>,
    seq: u32,
    call: ActivityCall,
    input: Box<str>,
}

impl Waiting {
    fn new(saga_id: Arc<str>, seq: u32, mut call: ActivityCall) -> Waiting {
        let input = serde_json::to_string(&call.input)
            .expect("a JSON value serializes")
            .into_boxed_str();
        call.input = Value::Null;
        Waiting {
            saga_id,
            seq,
            call,
            input,
        }
    }

    fn into_parts(self) -> (Arc<str>, u32, ActivityCall) {
        let mut call = self.call;
        call.input = serde_json::from_str(&self.input).expect("JSON this module wrote parses");
        (self.saga_id, self.seq, call)
    }
}

impl Dispatcher {
    /// Attempts run on `runtime`, at most `max_concurrent` at once; results
    /// go to `tx`.
    pub(crate) fn new(
        tx: Sender<Msg>,
        registry: Arc<Registry>,
        runtime: tokio::runtime::Handle,
        max_concurrent: usize,
    ) -> Dispatcher {
        Dispatcher {
            shared: Arc::new(Shared {
                tx,
                registry,
                runtime,
                slots: Mutex::new(Slots {
                    free: max_concurrent.max(1),
                    waiting: VecDeque::new(),
                }),
            }),
        }
    }

    /// Starts attempt `seq` of `saga_id`, or queues it until a slot frees.
    pub(crate) fn dispatch(&self, saga_id: Arc<str>, seq: u32, call: ActivityCall) {
        {
            let mut slots = self.shared.slots.lock().expect("dispatch slots");
            if slots.free == 0 {
                slots.waiting.push_back(Waiting::new(saga_id, seq, call));
                return;
            }
            slots.free -= 1;
        }
        run(self.shared.clone(), saga_id, seq, call);
    }
}

/// Runs one attempt in the slot it holds; the slot passes on when it ends.
fn run(shared: Arc<Shared>, saga_id: Arc<str>, seq: u32, call: ActivityCall) {
    let runtime = shared.runtime.clone();
    runtime.spawn(async move {
        let slot = Slot(shared.clone());
        let mut report = Report {
            tx: shared.tx.clone(),
            saga_id,
            seq,
            started_ms: now_ms(),
            sent: false,
        };
        report.send(shared.registry.attempt(call).await);
        drop(report);
        drop(slot);
    });
}

/// A held slot: released when the attempt ends, however it ends (a panic
/// or cancellation too), to the call that waited longest, if any.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        let next = {
            let mut slots = self.0.slots.lock().unwrap_or_else(|e| e.into_inner());
            let next = slots.waiting.pop_front();
            if next.is_none() {
                slots.free += 1;
            }
            next
        };
        if let Some(waiting) = next {
            let (saga_id, seq, call) = waiting.into_parts();
            run(self.0.clone(), saga_id, seq, call);
        }
    }
}

/// Sends an activity's result back to the core exactly once, even if the
/// activity panics (the report is then a retryable "panic" error).
struct Report {
    tx: Sender<Msg>,
    saga_id: Arc<str>,
    seq: u32,
    started_ms: u64,
    sent: bool,
}

impl Report {
    fn send(&mut self, result: Result<Value, ActivityError>) {
        self.sent = true;
        let _ = self.tx.send(Msg::Apply(Input::ActivityDone {
            saga_id: self.saga_id.clone(),
            seq: self.seq,
            started_ms: self.started_ms,
            finished_ms: now_ms(),
            result,
        }));
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.sent {
            self.send(Err(ActivityError::retryable(
                "panic",
                "the activity panicked or was cancelled; see the worker log",
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagaflow_workflows::Phase;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn call(n: u32, activity: &str) -> ActivityCall {
        ActivityCall {
            step: "s".into(),
            activity: activity.into(),
            phase: Phase::Action,
            attempt: 1,
            timeout_ms: 5_000,
            idempotency_key: format!("k{n}"),
            input: json!({"saga_id": format!("s{n}"), "order": {"amount": 1999, "price": 19.99,
                "items": [{"sku": "A", "qty": n}]}, "outputs": {"reserve": {"ok": true}}}),
        }
    }

    /// At most `max_concurrent` attempts run; the others wait and run in
    /// order, their input intact through the queue's JSON text; a panic
    /// reports an error and passes its slot on.
    #[test]
    fn waiting_calls_run_in_order_within_the_limit_and_a_panic_frees_its_slot() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut registry = Registry::new();
        let (r, m) = (running.clone(), most.clone());
        registry.register("t.echo", move |call: ActivityCall| {
            let (r, m) = (r.clone(), m.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(call.input)
            }
        });
        registry.register("t.panic", |_call: ActivityCall| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            panic!("boom")
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let d = Dispatcher::new(tx, Arc::new(registry), rt.handle().clone(), 2);
        d.dispatch("p".into(), 0, call(0, "t.panic"));
        for n in 1..=6 {
            d.dispatch(format!("s{n}").into(), n, call(n, "t.echo"));
        }
        let mut done = Vec::new();
        for _ in 0..7 {
            match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
                Msg::Apply(Input::ActivityDone { seq, result, .. }) => done.push((seq, result)),
                _ => panic!("not an activity result"),
            }
        }
        assert!(
            most.load(Ordering::SeqCst) <= 2,
            "{}",
            most.load(Ordering::SeqCst)
        );
        let (panicked, echoed): (Vec<_>, Vec<_>) = done.into_iter().partition(|(s, _)| *s == 0);
        assert_eq!(panicked[0].1.as_ref().unwrap_err().kind, "panic");
        let seqs: Vec<u32> = echoed.iter().map(|(s, _)| *s).collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3, 4, 5, 6]);
        for (seq, result) in echoed {
            assert_eq!(result.unwrap(), call(seq, "t.echo").input);
        }
    }
}
