//! Dependency order for the objects a restore creates before the data: every object after the
//! objects it depends on (PostgreSQL's `pg_depend`, plus partition and inheritance parents), ties
//! broken by creation order (OID), as `pg_dump` sorts its archive.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// An object's catalog identity: the catalog it lives in (`pg_class`, `pg_type`, `pg_proc`, ...)
/// and its OID there.
pub type CatalogKey = (u32, u32);

/// Orders `nodes` so that for every edge `(dependent, dependency)` between two of them the
/// dependency comes first; among objects free to go, the lowest OID first. Edges naming an
/// object outside `nodes` are ignored. Objects on a dependency cycle (which PostgreSQL's own
/// creation must have broken, e.g. with `ALTER`) follow in OID order.
pub fn dependency_order(nodes: &[CatalogKey], edges: &[(CatalogKey, CatalogKey)]) -> Vec<usize> {
    let positions: std::collections::HashMap<CatalogKey, usize> =
        nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let index = |key: &CatalogKey| positions.get(key).copied();
    let mut waiting_on = vec![0usize; nodes.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut seen = std::collections::HashSet::new();
    for (dependent, dependency) in edges {
        let (Some(d), Some(r)) = (index(dependent), index(dependency)) else {
            continue;
        };
        if d != r && seen.insert((d, r)) {
            waiting_on[d] += 1;
            dependents[r].push(d);
        }
    }
    let oid = |i: usize| (nodes[i].1, nodes[i].0);
    let mut ready: BinaryHeap<Reverse<((u32, u32), usize)>> = (0..nodes.len())
        .filter(|&i| waiting_on[i] == 0)
        .map(|i| Reverse((oid(i), i)))
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    let mut placed = vec![false; nodes.len()];
    loop {
        while let Some(Reverse((_, i))) = ready.pop() {
            if placed[i] {
                continue;
            }
            placed[i] = true;
            order.push(i);
            for &d in dependents[i].iter().filter(|&&d| !placed[d]) {
                waiting_on[d] -= 1;
                if waiting_on[d] == 0 {
                    ready.push(Reverse((oid(d), d)));
                }
            }
        }
        // A cycle: release its lowest-OID member and carry on.
        match (0..nodes.len())
            .filter(|&i| !placed[i] && waiting_on[i] > 0)
            .min_by_key(|&i| oid(i))
        {
            Some(i) => {
                waiting_on[i] = 0;
                ready.push(Reverse((oid(i), i)));
            }
            None => return order,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::dependency_order;

    #[test]
    fn dependencies_first_then_creation_order() {
        // A view (oid 30) on a table (20) whose column has a type (40, created after an ALTER).
        let nodes = [(1, 30), (1, 20), (2, 40), (3, 10)];
        let edges = [((1, 30), (1, 20)), ((1, 20), (2, 40)), ((1, 20), (9, 99))];
        let order: Vec<_> = dependency_order(&nodes, &edges)
            .into_iter()
            .map(|i| nodes[i])
            .collect();
        assert_eq!(order, vec![(3, 10), (2, 40), (1, 20), (1, 30)]);
    }

    #[test]
    fn a_cycle_still_places_every_object() {
        let nodes = [(1, 5), (1, 6), (1, 7)];
        let edges = [((1, 5), (1, 6)), ((1, 6), (1, 5)), ((1, 7), (1, 6))];
        let order: Vec<_> = dependency_order(&nodes, &edges)
            .into_iter()
            .map(|i| nodes[i])
            .collect();
        assert_eq!(order, vec![(1, 5), (1, 6), (1, 7)]);
    }
}
