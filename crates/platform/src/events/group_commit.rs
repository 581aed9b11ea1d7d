//! Group commit for consumers: deliveries that arrive while a batch is being recorded wait, and are recorded
//! together in the next one. Under load a consumer then pays for one transaction (and each of its shared rows
//! once) per batch instead of per event; a delivery is acknowledged only once its batch has committed, so an
//! event is never acknowledged before its effect is durable.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

/// What a consumer that records in batches provides: one transaction for many deliveries.
pub trait BatchRecorder: Send + Sync + 'static {
    /// What one delivery asks to record.
    type Item: Send + Sync + 'static;
    /// What recording an item tells its delivery (typically whether it was new, or handled before).
    type Outcome: Send + 'static;
    /// Why a batch could not be recorded.
    type Error: Display + Send;

    /// Records `items` in one transaction and returns one outcome per item, in order. On an error nothing of
    /// the batch may have been recorded.
    fn record_batch(
        &self,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Self::Outcome>, Self::Error>> + Send;
}

/// A delivery waiting for its batch, and where its outcome goes.
struct Waiting<I, O> {
    item: I,
    outcome: oneshot::Sender<Result<O, String>>,
}

/// The queue in front of a [`BatchRecorder`]; cloning it shares the queue.
pub struct GroupCommit<I, O> {
    queue: mpsc::Sender<Waiting<I, O>>,
}

impl<I, O> Clone for GroupCommit<I, O> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<I, O> std::fmt::Debug for GroupCommit<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("waiting", &(self.queue.max_capacity() - self.queue.capacity())).finish()
    }
}

impl<I: Send + Sync + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// Starts the task that records what waits through `recorder`, at most `max_batch` items per transaction;
    /// it ends once every clone of the returned queue is gone. Must be called inside a Tokio runtime.
    pub fn start<R: BatchRecorder<Item = I, Outcome = O>>(recorder: R, max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (queue, waiting) = mpsc::channel(max_batch * 4);
        tokio::spawn(record_in_batches(Arc::new(recorder), waiting, max_batch));
        Self { queue }
    }

    /// Queues `item` for the next batch and waits until that batch has committed: its outcome, or why it
    /// could not be recorded (the bus then delivers it again).
    pub async fn record(&self, item: I) -> Result<O, String> {
        let (outcome, recorded) = oneshot::channel();
        let stopped = || "the consumer is stopping".to_owned();
        self.queue.send(Waiting { item, outcome }).await.map_err(|_| stopped())?;
        recorded.await.map_err(|_| stopped())?
    }
}

async fn record_in_batches<R: BatchRecorder>(
    recorder: Arc<R>,
    mut waiting: mpsc::Receiver<Waiting<R::Item, R::Outcome>>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while waiting.recv_many(&mut batch, max_batch).await > 0 {
        let (outcomes, items): (Vec<_>, Vec<_>) = batch.drain(..).map(|w| (w.outcome, w.item)).unzip();
        match recorder.record_batch(&items).await {
            Ok(recorded) => {
                let mut recorded = recorded.into_iter();
                for outcome in outcomes {
                    // The delivery may have given up waiting (its relay stopped): nothing to tell then.
                    let _ = outcome.send(recorded.next().ok_or_else(missing));
                }
            }
            Err(error) if items.len() > 1 => {
                // One item the database refuses must not hold up the others (their relays would send them
                // again with it, forever): each is recorded alone, and only the refused one fails.
                let items_in_batch = items.len();
                tracing::warn!(%error, items_in_batch, "recording a batch failed; recording its items one by one");
                for (outcome, item) in outcomes.into_iter().zip(&items) {
                    let result = match recorder.record_batch(std::slice::from_ref(item)).await {
                        Ok(recorded) => recorded.into_iter().next().ok_or_else(missing),
                        Err(error) => Err(error.to_string()),
                    };
                    let _ = outcome.send(result);
                }
            }
            Err(error) => {
                let error = error.to_string();
                for outcome in outcomes {
                    let _ = outcome.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The error of an item its recorder returned no outcome for (a bug in the recorder).
fn missing() -> String {
    "the batch returned no outcome for this item".to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use super::*;

    /// Records numbers, refusing 13; remembers the batches it saw and the numbers it kept.
    struct Numbers {
        batches: Mutex<Vec<Vec<u32>>>,
        kept: Mutex<HashSet<u32>>,
        gate: tokio::sync::Semaphore,
    }

    impl Numbers {
        /// Closed until the test adds permits.
        fn gated() -> Arc<Self> {
            Arc::new(Self { batches: Mutex::default(), kept: Mutex::default(), gate: tokio::sync::Semaphore::new(0) })
        }
    }

    impl BatchRecorder for Arc<Numbers> {
        type Item = u32;
        type Outcome = bool;
        type Error = String;

        async fn record_batch(&self, items: &[u32]) -> Result<Vec<bool>, String> {
            // Held until the test opens the gate, so that deliveries pile up behind the first batch.
            let _permit = self.gate.acquire().await.map_err(|e| e.to_string())?;
            self.batches.lock().map_err(|e| e.to_string())?.push(items.to_vec());
            if items.contains(&13) {
                return Err("13 is refused".to_owned());
            }
            let mut kept = self.kept.lock().map_err(|e| e.to_string())?;
            Ok(items.iter().map(|n| kept.insert(*n)).collect())
        }
    }

    /// Records each of `numbers` from a task of its own, which answers the number and its outcome.
    fn record_each(
        queue: &GroupCommit<u32, bool>,
        numbers: &[u32],
    ) -> Vec<tokio::task::JoinHandle<(u32, Result<bool, String>)>> {
        let record = |n: u32| {
            let queue = queue.clone();
            tokio::spawn(async move { (n, queue.record(n).await) })
        };
        numbers.iter().map(|n| record(*n)).collect()
    }

    /// Waits until the recorder took what was queued (it then waits at the gate).
    async fn until_taken(queue: &GroupCommit<u32, bool>) {
        tokio::task::yield_now().await;
        while queue.queue.capacity() < queue.queue.max_capacity() {
            tokio::task::yield_now().await;
        }
    }

    /// Lets the tasks just spawned queue their items.
    async fn let_them_queue() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn deliveries_waiting_behind_a_batch_are_recorded_together() {
        let numbers = Numbers::gated();
        let queue = GroupCommit::start(numbers.clone(), 64);
        let first = record_each(&queue, &[1]);
        // Let the first delivery reach the recorder, then queue more behind it.
        until_taken(&queue).await;
        let rest = record_each(&queue, &[2, 3, 2, 4]);
        let_them_queue().await;
        numbers.gate.add_permits(10);
        for task in first {
            assert_eq!(task.await.ok(), Some((1, Ok(true))));
        }
        let mut outcomes = Vec::new();
        for task in rest {
            outcomes.push(task.await.ok().map(|(_, outcome)| outcome));
        }
        // The repeated 2 is new once, whichever copy came first.
        let new = outcomes.iter().filter(|o| **o == Some(Ok(true))).count();
        assert_eq!(new, 3, "{outcomes:?}");
        assert_eq!(outcomes.iter().filter(|o| **o == Some(Ok(false))).count(), 1, "{outcomes:?}");
        let batches = numbers.batches.lock().map(|b| b.clone()).unwrap_or_default();
        assert_eq!(batches.len(), 2, "one batch for the first delivery, one for those that waited: {batches:?}");
        assert_eq!(batches[1].len(), 4);
    }

    #[tokio::test]
    async fn a_refused_item_fails_alone() {
        let numbers = Numbers::gated();
        let queue = GroupCommit::start(numbers.clone(), 64);
        let blocker = record_each(&queue, &[100]);
        until_taken(&queue).await;
        let tasks = record_each(&queue, &[12, 13, 14]);
        let_them_queue().await;
        numbers.gate.add_permits(10);
        for task in blocker {
            assert_eq!(task.await.ok(), Some((100, Ok(true))));
        }
        for task in tasks {
            let (n, outcome) = task.await.unwrap_or((0, Err("task failed".to_owned())));
            if n == 13 {
                assert_eq!(outcome, Err("13 is refused".to_owned()));
            } else {
                assert_eq!(outcome, Ok(true), "{n}");
            }
        }
        let kept = numbers.kept.lock().map(|k| k.clone()).unwrap_or_default();
        assert_eq!(kept, HashSet::from([100, 12, 14]));
    }
}
