//! A small thread pool for independent scenario runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// Runs `work` on every item on `threads` threads, the costliest first,
/// and hands each result to `done` on the calling thread in item order.
/// When `done` returns false no further item is started (those running
/// finish, their results are dropped).
pub fn run<J: Sync, T: Send>(
    items: &[J],
    threads: usize,
    cost: impl Fn(&J) -> u64,
    work: impl Fn(&J) -> T + Sync,
    mut done: impl FnMut(usize, T) -> bool,
) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Stable: equal costs keep item order.
    order.sort_by_key(|&i| std::cmp::Reverse(cost(&items[i])));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, T)>();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            let tx = tx.clone();
            let (order, next, stop, work) = (&order, &next, &stop, &work);
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(&index) = order.get(k) else { break };
                if tx.send((index, work(&items[index]))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut pending: BTreeMap<usize, T> = BTreeMap::new();
        let mut cursor = 0;
        for (index, result) in rx {
            pending.insert(index, result);
            while let Some(result) = pending.remove(&cursor) {
                cursor += 1;
                if !done(cursor - 1, result) {
                    stop.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_and_stop_stops() {
        let items: Vec<u64> = (0..50).collect();
        let mut seen = Vec::new();
        run(
            &items,
            4,
            |&x| x % 7,
            |&x| x * 2,
            |i, r| {
                seen.push((i, r));
                true
            },
        );
        assert_eq!(
            seen,
            (0..50).map(|i| (i as usize, i * 2)).collect::<Vec<_>>()
        );

        let mut count = 0;
        run(
            &items,
            3,
            |_| 0,
            |&x| x,
            |_, _| {
                count += 1;
                count < 5
            },
        );
        assert_eq!(count, 5);
    }
}
