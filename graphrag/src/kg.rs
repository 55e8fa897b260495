//! The in-memory knowledge graph: entities and weighted edges aggregated from every
//! document's [`DocGraph`], held in a petgraph graph. Rebuilt from the stored per-document
//! contributions at start-up and after changes, so deleting a document removes its edges and
//! the entities nothing else mentions.
//!
//! Query-time operations: entity linking of a question (exact n-grams, then fuzzy via the
//! in-memory entity index), personalized PageRank from the linked entities (forward push, so
//! only the neighbourhood that matters is touched), and chunk scores from entity scores.
//! Index-time: Louvain communities with extractive summaries for broad questions.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use petgraph::graph::{NodeIndex, UnGraph};
use petgraph::visit::EdgeRef;

use crate::extract::{DocGraph, RelationKind, normalize};
use crate::index::EntityIndex;
use crate::text::{fold_plural, is_stopword, words};

#[derive(Debug, Clone)]
pub struct Entity {
    pub key: String,
    pub name: String,
    pub aliases: Vec<String>,
    /// Chunks that mention it, ascending.
    pub chunks: Vec<u64>,
    pub mentions: u32,
    pub documents: u32,
    pub community: u32,
}

#[derive(Debug, Clone, Default)]
pub struct EdgeData {
    pub weight: f32,
    pub sentence_cooccurrences: u32,
    pub chunk_cooccurrences: u32,
    /// Typed relations as (kind, from entity, to entity).
    pub relations: Vec<(RelationKind, u32, u32)>,
}

#[derive(Debug, Clone)]
pub struct Community {
    pub id: u32,
    /// Members, most connected first.
    pub entities: Vec<u32>,
    /// The chunk that mentions most members: its sentences summarise the community.
    pub representative_chunk: Option<u64>,
}

#[derive(Debug, Default)]
pub struct KnowledgeGraph {
    pub entities: Vec<Entity>,
    keys: HashMap<String, u32>,
    pub graph: UnGraph<u32, EdgeData>,
    /// Out-edges with transition probabilities, for PageRank.
    transitions: Vec<Vec<(u32, f32)>>,
    chunk_entities: HashMap<u64, Vec<u32>>,
    pub communities: Vec<Community>,
    entity_index: Option<EntityIndex>,
    total_chunks: usize,
}

/// Calls its argument once per document contribution. The graph is built in three passes
/// over the contributions, so they can be streamed from the store one at a time instead of
/// being held in memory together (they hold every co-occurring pair by name).
pub type Visit<'a, E> = dyn FnMut(&mut dyn FnMut(&DocGraph)) -> Result<(), E> + 'a;

/// Union-find over entity keys, for aliases.
fn canonical_map<E>(visit: &mut Visit<'_, E>) -> Result<HashMap<String, String>, E> {
    let mut parent: HashMap<String, String> = HashMap::new();
    fn find(parent: &mut HashMap<String, String>, k: &str) -> String {
        let mut cur = k.to_owned();
        while let Some(p) = parent.get(&cur) {
            if p == &cur {
                break;
            }
            cur = p.clone();
        }
        cur
    }
    visit(&mut |g: &DocGraph| {
        for (alias, canonical) in &g.aliases {
            let a = find(&mut parent, alias);
            let c = find(&mut parent, canonical);
            if a != c {
                parent.insert(a, c);
            }
        }
    })?;
    let keys: Vec<String> = parent.keys().cloned().collect();
    Ok(keys.into_iter().map(|k| (k.clone(), find(&mut parent, &k))).filter(|(k, c)| k != c).collect())
}

impl KnowledgeGraph {
    /// Builds from contributions held in memory.
    pub fn build(graphs: &[&DocGraph], total_chunks: usize) -> Self {
        let result = Self::build_streaming::<std::convert::Infallible>(
            &mut |f| {
                graphs.iter().for_each(|g| f(g));
                Ok(())
            },
            total_chunks,
        );
        match result {
            Ok(kg) => kg,
            Err(never) => match never {},
        }
    }

    /// Builds from contributions streamed by `visit` (three passes: aliases; mentions;
    /// co-occurrences and relations).
    pub fn build_streaming<E>(visit: &mut Visit<'_, E>, total_chunks: usize) -> Result<Self, E> {
        let canon = canonical_map(visit)?;
        let resolve = |k: &str| canon.get(k).cloned().unwrap_or_else(|| k.to_owned());

        struct Acc {
            names: BTreeMap<String, u32>,
            chunks: BTreeSet<u64>,
            mentions: u32,
            documents: u32,
        }
        // Keys some document names as a real entity; weak-only keys are dropped at the end.
        let mut strong: BTreeSet<String> = BTreeSet::new();
        let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
        visit(&mut |g: &DocGraph| {
            let mut seen_in_doc: BTreeSet<String> = BTreeSet::new();
            for (key, chunk, n) in &g.mentions {
                let c = resolve(key);
                if !g.weak.contains(key) {
                    strong.insert(c.clone());
                }
                let e = acc.entry(c.clone()).or_insert_with(|| Acc {
                    names: BTreeMap::new(),
                    chunks: BTreeSet::new(),
                    mentions: 0,
                    documents: 0,
                });
                e.chunks.insert(*chunk);
                e.mentions += n;
                if let Some(name) = g.names.get(key) {
                    *e.names.entry(name.clone()).or_default() += n;
                }
                if seen_in_doc.insert(c) {
                    e.documents += 1;
                }
            }
        })?;
        let mut kg = KnowledgeGraph { total_chunks, ..KnowledgeGraph::default() };
        for (key, a) in acc.into_iter().filter(|(k, _)| strong.contains(k)) {
            let id = u32::try_from(kg.entities.len()).unwrap_or(u32::MAX);
            let mut names: Vec<(String, u32)> = a.names.into_iter().collect();
            names.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            let name = names.first().map(|(n, _)| n.clone()).unwrap_or_else(|| key.clone());
            let aliases: Vec<String> = names.iter().skip(1).map(|(n, _)| n.clone()).take(8).collect();
            for chunk in &a.chunks {
                kg.chunk_entities.entry(*chunk).or_default().push(id);
            }
            kg.keys.insert(key.clone(), id);
            kg.entities.push(Entity {
                key,
                name,
                aliases,
                chunks: a.chunks.into_iter().collect(),
                mentions: a.mentions,
                documents: a.documents,
                community: 0,
            });
        }
        for (alias, canonical) in &canon {
            if let Some(&id) = kg.keys.get(canonical) {
                kg.keys.entry(alias.clone()).or_insert(id);
                if let Some(e) = kg.entities.get_mut(id as usize)
                    && !e.aliases.iter().any(|a| normalize(a) == *alias)
                {
                    e.aliases.push(alias.clone());
                }
            }
        }
        for i in 0..kg.entities.len() {
            kg.graph.add_node(u32::try_from(i).unwrap_or(u32::MAX));
        }

        // Edges: co-occurrence counts weighted by NPMI over chunks, plus typed relations.
        let mut edges: BTreeMap<(u32, u32), EdgeData> = BTreeMap::new();
        let keys = &kg.keys;
        visit(&mut |g: &DocGraph| {
            for (a, b, sentence, chunk) in &g.pairs {
                let (Some(&x), Some(&y)) = (keys.get(&resolve(a)), keys.get(&resolve(b))) else { continue };
                if x == y {
                    continue;
                }
                let e = edges.entry((x.min(y), x.max(y))).or_default();
                e.sentence_cooccurrences += sentence;
                e.chunk_cooccurrences += chunk;
            }
            for r in &g.relations {
                let (Some(&x), Some(&y)) = (keys.get(&resolve(&r.from)), keys.get(&resolve(&r.to))) else { continue };
                if x != y {
                    let e = edges.entry((x.min(y), x.max(y))).or_default();
                    if !e.relations.contains(&(r.kind, x, y)) {
                        e.relations.push((r.kind, x, y));
                    }
                }
            }
        })?;
        let n = total_chunks.max(1) as f32;
        for ((x, y), mut e) in edges {
            // One chunk together and never in a sentence together is noise.
            if e.sentence_cooccurrences == 0 && e.chunk_cooccurrences < 2 && e.relations.is_empty() {
                continue;
            }
            let px = kg.entities[x as usize].chunks.len() as f32 / n;
            let py = kg.entities[y as usize].chunks.len() as f32 / n;
            let pxy = (e.chunk_cooccurrences.max(1) as f32 / n).min(px.min(py));
            let npmi = if pxy >= 1.0 { 1.0 } else { (pxy / (px * py)).ln() / -pxy.ln() };
            e.weight = npmi.max(0.05) * (1.0 + (1.0 + e.sentence_cooccurrences as f32).ln()) + e.relations.len() as f32;
            kg.graph.add_edge(NodeIndex::new(x as usize), NodeIndex::new(y as usize), e);
        }
        kg.transitions = (0..kg.entities.len())
            .map(|i| {
                let node = NodeIndex::new(i);
                let out: Vec<(u32, f32)> = kg
                    .graph
                    .edges(node)
                    .map(|edge| {
                        let other = if edge.source() == node { edge.target() } else { edge.source() };
                        (other.index() as u32, edge.weight().weight)
                    })
                    .collect();
                let total: f32 = out.iter().map(|(_, w)| w).sum();
                out.into_iter().map(|(t, w)| (t, w / total.max(f32::MIN_POSITIVE))).collect()
            })
            .collect();
        kg.detect_communities();
        let names =
            kg.entities.iter().enumerate().flat_map(|(i, e)| {
                std::iter::once((i as u32, e.name.as_str())).chain(e.aliases.iter().map(move |a| (i as u32, a.as_str())))
            });
        // An empty graph needs no name index (and an empty knowledge base's start-up then runs
        // no tantivy writer at all).
        if !kg.entities.is_empty() {
            kg.entity_index = EntityIndex::build(names).ok();
        }
        Ok(kg)
    }

    pub fn entity_id(&self, key: &str) -> Option<u32> {
        self.keys.get(key).copied()
    }

    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    pub fn relation_count(&self) -> usize {
        self.graph.edge_weights().map(|e| e.relations.len()).sum()
    }

    /// How informative an entity is: rarer is stronger.
    fn idf(&self, id: u32) -> f32 {
        let df = self.entities[id as usize].chunks.len().max(1) as f32;
        ((self.total_chunks.max(1) as f32 + 1.0) / df).ln().max(0.05)
    }

    /// Entities named in `question`: longest exact n-gram matches first, then fuzzy matches
    /// of the remaining content words. Weights favour rare entities.
    pub fn link(&self, question: &str) -> Vec<(u32, f32)> {
        let raw: Vec<String> = question
            .split_whitespace()
            .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '/' && c != '_').to_owned())
            .filter(|w| !w.is_empty())
            .collect();
        let mut covered = vec![false; raw.len()];
        let mut seeds: BTreeMap<u32, f32> = BTreeMap::new();
        for n in (1..=4usize).rev() {
            for start in 0..raw.len().saturating_sub(n - 1) {
                if covered[start..start + n].iter().any(|c| *c) {
                    continue;
                }
                let phrase = raw[start..start + n].join(" ");
                let key = normalize(&phrase);
                if n == 1 && is_stopword(&key) {
                    continue;
                }
                let mut parts: Vec<String> = key.split(' ').map(str::to_owned).collect();
                if let Some(last) = parts.last_mut() {
                    *last = fold_plural(last);
                }
                let folded = parts.join(" ");
                if let Some(id) = self.entity_id(&key).or_else(|| self.entity_id(&folded)) {
                    *seeds.entry(id).or_default() += self.idf(id) * n as f32;
                    covered[start..start + n].iter_mut().for_each(|c| *c = true);
                }
            }
        }
        if let Some(index) = &self.entity_index {
            for (i, w) in raw.iter().enumerate() {
                let lw = w.to_lowercase();
                if covered[i] || lw.len() < 5 || is_stopword(&lw) {
                    continue;
                }
                for (id, _) in index.fuzzy(&lw, 2).unwrap_or_default() {
                    let e = &self.entities[id as usize];
                    // Only single-word names: a fuzzy hit on one word of a long name is weak.
                    if !e.key.contains(' ') {
                        *seeds.entry(id).or_default() += 0.5 * self.idf(id);
                    }
                }
            }
        }
        let mut out: Vec<(u32, f32)> = seeds.into_iter().collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out.truncate(12);
        out
    }

    /// Personalized PageRank from `seeds` by forward push (Andersen, Chung, Lang 2006):
    /// `alpha` is the restart probability, `epsilon` the residual tolerance per unit degree.
    pub fn personalized_pagerank(&self, seeds: &[(u32, f32)], alpha: f32, epsilon: f32) -> HashMap<u32, f32> {
        let total: f32 = seeds.iter().map(|(_, w)| w).sum();
        let mut p: HashMap<u32, f32> = HashMap::new();
        if total <= 0.0 {
            return p;
        }
        let mut r: HashMap<u32, f32> = seeds.iter().map(|(id, w)| (*id, w / total)).collect();
        // Seeds in a fixed order keep results reproducible.
        let mut queue: Vec<u32> = seeds.iter().rev().map(|(id, _)| *id).collect();
        let mut pushes = 0usize;
        while let Some(u) = queue.pop() {
            pushes += 1;
            if pushes > 200_000 {
                break;
            }
            let ru = r.get(&u).copied().unwrap_or(0.0);
            let out = &self.transitions[u as usize];
            let degree = out.len().max(1) as f32;
            if ru < epsilon * degree {
                continue;
            }
            *p.entry(u).or_default() += alpha * ru;
            r.insert(u, 0.0);
            if out.is_empty() {
                // A dangling node returns its mass to itself (restart).
                *p.entry(u).or_default() += (1.0 - alpha) * ru;
                continue;
            }
            for (v, prob) in out {
                let rv = r.entry(*v).or_default();
                let before = *rv;
                *rv += (1.0 - alpha) * ru * prob;
                let dv = self.transitions[*v as usize].len().max(1) as f32;
                if before < epsilon * dv && *rv >= epsilon * dv {
                    queue.push(*v);
                }
            }
        }
        p
    }

    /// Chunk scores from entity scores: a chunk earns the scores of the entities it mentions,
    /// damped by how many entities it mentions (long lists of names are not answers).
    /// Only chunks `keep` allows are scored (a caller's collections), so others cannot crowd
    /// them out of the top `limit`.
    pub fn chunk_scores(&self, entity_scores: &HashMap<u32, f32>, limit: usize, keep: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)> {
        let mut ranked: Vec<(&u32, &f32)> = entity_scores.iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
        let mut chunks: HashMap<u64, f32> = HashMap::new();
        for (id, score) in ranked.into_iter().take(200) {
            let e = &self.entities[*id as usize];
            // Very common entities spread their score thin.
            let share = score * self.idf(*id);
            for c in e.chunks.iter().filter(|c| keep(**c)) {
                *chunks.entry(*c).or_default() += share;
            }
        }
        let mut out: Vec<(u64, f32)> = chunks
            .into_iter()
            .map(|(c, s)| {
                let n = self.chunk_entities.get(&c).map_or(1, Vec::len).max(1) as f32;
                (c, s / n.powf(0.3))
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(limit);
        out
    }

    pub fn chunk_entities(&self, chunk: u64) -> &[u32] {
        self.chunk_entities.get(&chunk).map_or(&[], Vec::as_slice)
    }

    /// Entities whose key or alias contains `query` (case-insensitive), most mentioned first,
    /// then linked ones.
    pub fn search(&self, query: &str, limit: usize) -> Vec<u32> {
        let q = normalize(query);
        let mut hits: Vec<u32> = Vec::new();
        if q.is_empty() {
            let mut all: Vec<u32> = (0..self.entities.len() as u32).collect();
            all.sort_by_key(|i| std::cmp::Reverse(self.entities[*i as usize].mentions));
            all.truncate(limit);
            return all;
        }
        for (i, e) in self.entities.iter().enumerate() {
            if e.key.contains(&q) || e.aliases.iter().any(|a| normalize(a).contains(&q)) {
                hits.push(i as u32);
            }
        }
        for (id, _) in self.link(query) {
            if !hits.contains(&id) {
                hits.push(id);
            }
        }
        hits.sort_by_key(|i| (self.entities[*i as usize].key != q, std::cmp::Reverse(self.entities[*i as usize].mentions)));
        hits.truncate(limit);
        hits
    }

    /// Neighbours of an entity by edge weight.
    pub fn neighbours(&self, id: u32, limit: usize) -> Vec<(u32, &EdgeData)> {
        let node = NodeIndex::new(id as usize);
        let mut out: Vec<(u32, &EdgeData)> = self
            .graph
            .edges(node)
            .map(|e| {
                let other = if e.source() == node { e.target() } else { e.source() };
                (other.index() as u32, e.weight())
            })
            .collect();
        out.sort_by(|a, b| b.1.weight.total_cmp(&a.1.weight));
        out.truncate(limit);
        out
    }

    /// Louvain modularity optimisation (local moving, then aggregation), two levels.
    fn detect_communities(&mut self) {
        let n = self.entities.len();
        if n == 0 {
            return;
        }
        // Level graph: adjacency with weights.
        let mut adj: Vec<HashMap<usize, f64>> = vec![HashMap::new(); n];
        for e in self.graph.edge_references() {
            let (a, b, w) = (e.source().index(), e.target().index(), f64::from(e.weight().weight));
            *adj[a].entry(b).or_default() += w;
            *adj[b].entry(a).or_default() += w;
        }
        let mut membership: Vec<usize> = (0..n).collect();
        for _level in 0..2 {
            let assignment = louvain_level(&adj);
            for m in membership.iter_mut() {
                *m = assignment[*m];
            }
            let k = assignment.iter().copied().max().map_or(0, |m| m + 1);
            let mut next: Vec<HashMap<usize, f64>> = vec![HashMap::new(); k];
            for (a, row) in adj.iter().enumerate() {
                for (b, w) in row {
                    *next[assignment[a]].entry(assignment[*b]).or_default() += w;
                }
            }
            if k == adj.len() {
                break;
            }
            adj = next;
        }
        let mut groups: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        for (i, m) in membership.iter().enumerate() {
            groups.entry(*m).or_default().push(i as u32);
        }
        let mut communities: Vec<Vec<u32>> = groups.into_values().filter(|g| g.len() >= 3).collect();
        communities.sort_by_key(|g| std::cmp::Reverse(g.len()));
        self.communities.clear();
        for (cid, mut members) in communities.into_iter().enumerate() {
            let degree = |i: &u32| self.transitions[*i as usize].len();
            members.sort_by_key(|i| std::cmp::Reverse(degree(i)));
            let mut counts: HashMap<u64, usize> = HashMap::new();
            for m in members.iter().take(10) {
                self.entities[*m as usize].community = cid as u32 + 1;
                for c in &self.entities[*m as usize].chunks {
                    *counts.entry(*c).or_default() += 1;
                }
            }
            for m in &members {
                self.entities[*m as usize].community = cid as u32 + 1;
            }
            let representative_chunk = counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))).map(|(c, _)| c);
            self.communities.push(Community { id: cid as u32 + 1, entities: members, representative_chunk });
        }
    }
}

/// One Louvain pass: nodes move to the neighbouring community with the best modularity gain
/// until nothing moves. Returns dense community ids.
fn louvain_level(adj: &[HashMap<usize, f64>]) -> Vec<usize> {
    let n = adj.len();
    let degree: Vec<f64> = adj.iter().map(|row| row.values().sum()).collect();
    let m2: f64 = degree.iter().sum();
    let mut community: Vec<usize> = (0..n).collect();
    if m2 <= 0.0 {
        return community;
    }
    let mut total: Vec<f64> = degree.clone();
    for _round in 0..20 {
        let mut moved = false;
        for i in 0..n {
            let current = community[i];
            let mut links: HashMap<usize, f64> = HashMap::new();
            for (j, w) in &adj[i] {
                if *j != i {
                    *links.entry(community[*j]).or_default() += w;
                }
            }
            total[current] -= degree[i];
            let gain = |c: usize, k_in: f64| k_in - total[c] * degree[i] / m2;
            let mut best = current;
            let mut best_gain = gain(current, links.get(&current).copied().unwrap_or(0.0));
            for (c, k_in) in &links {
                let g = gain(*c, *k_in);
                if g > best_gain + 1e-12 {
                    best = *c;
                    best_gain = g;
                }
            }
            total[best] += degree[i];
            if best != current {
                community[i] = best;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let mut dense: HashMap<usize, usize> = HashMap::new();
    for c in community.iter_mut() {
        let next = dense.len();
        *c = *dense.entry(*c).or_insert(next);
    }
    community
}

/// Words of a question that say it asks for an overview rather than a fact.
pub fn is_broad_question(question: &str) -> bool {
    let q: Vec<String> = words(question).collect();
    let text = q.join(" ");
    [
        "what is this about",
        "what is it about",
        "main topics",
        "overview",
        "summarize",
        "summarise",
        "summary",
        "what does this cover",
        "what topics",
        "what can you tell me about the documents",
        "what is in the knowledge base",
    ]
    .iter()
    .any(|p| text.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{ExtractChunk, extract};

    fn kg(docs: &[&[&str]]) -> KnowledgeGraph {
        let mut id = 0u64;
        let graphs: Vec<DocGraph> = docs
            .iter()
            .map(|chunks| {
                let items: Vec<ExtractChunk<'_>> = chunks
                    .iter()
                    .map(|t| {
                        id += 1;
                        ExtractChunk { id, text: t, code_terms: &[] }
                    })
                    .collect();
                extract(&items)
            })
            .collect();
        let refs: Vec<&DocGraph> = graphs.iter().collect();
        KnowledgeGraph::build(&refs, id as usize)
    }

    #[test]
    fn aliases_merge_across_documents_and_pagerank_reaches_neighbours() {
        let g = kg(&[
            &[
                "The Advanced Package Tool (APT) installs packages. APT requires Dpkg for the work.",
                "Unrelated text about Samba shares and SMB.",
            ],
            &["Dpkg reads the Control File of each package. The Control File lists Dependencies."],
        ]);
        let apt = g.entity_id("apt").unwrap();
        assert_eq!(g.entity_id("advanced package tool"), Some(apt), "alias resolves to the same entity");
        let seeds = g.link("How does the advanced package tool work?");
        assert_eq!(seeds.first().map(|s| s.0), Some(apt));
        let scores = g.personalized_pagerank(&seeds, 0.15, 1e-5);
        let dpkg = g.entity_id("dpkg").unwrap();
        let control = g.entity_id("control file").unwrap();
        assert!(scores.get(&dpkg).copied().unwrap_or(0.0) > 0.0, "one hop");
        assert!(scores.get(&control).copied().unwrap_or(0.0) > 0.0, "two hops, through another document");
        let samba = g.entity_id("samba").unwrap();
        assert_eq!(scores.get(&samba).copied().unwrap_or(0.0), 0.0, "not connected");
        let chunks = g.chunk_scores(&scores, 10, &|_| true);
        assert!(chunks.iter().any(|(c, _)| *c == 3), "the second document's chunk is reached: {chunks:?}");
    }

    #[test]
    fn louvain_separates_two_cliques() {
        let mut adj: Vec<HashMap<usize, f64>> = vec![HashMap::new(); 6];
        for (a, b) in [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)] {
            let w = if (a, b) == (2, 3) { 0.1 } else { 1.0 };
            adj[a].insert(b, w);
            adj[b].insert(a, w);
        }
        let c = louvain_level(&adj);
        assert_eq!(c[0], c[1]);
        assert_eq!(c[1], c[2]);
        assert_eq!(c[3], c[4]);
        assert_ne!(c[0], c[3]);
    }

    #[test]
    fn broad_questions() {
        assert!(is_broad_question("What is this about?"));
        assert!(is_broad_question("Give me an overview"));
        assert!(!is_broad_question("How do I configure apt?"));
    }
}
