//! Graph export for inspection in Graphviz (DOT) or Gephi/yEd (GraphML).

use std::fmt::Write;

use petgraph::visit::EdgeRef;

use crate::kg::KnowledgeGraph;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Dot,
    GraphMl,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub fn export(kg: &KnowledgeGraph, format: ExportFormat) -> String {
    let mut out = String::new();
    match format {
        ExportFormat::Dot => {
            out.push_str("graph knowledge {\n  node [shape=box];\n");
            for (i, e) in kg.entities.iter().enumerate() {
                let _ = writeln!(out, "  n{i} [label=\"{}\", mentions={}, community={}];", dot_escape(&e.name), e.mentions, e.community);
            }
            for edge in kg.graph.edge_references() {
                let d = edge.weight();
                let label: Vec<&str> = d.relations.iter().map(|(k, _, _)| k.as_str()).collect();
                let _ = writeln!(
                    out,
                    "  n{} -- n{} [weight={:.3}, label=\"{}\"];",
                    edge.source().index(),
                    edge.target().index(),
                    d.weight,
                    label.join(",")
                );
            }
            out.push_str("}\n");
        }
        ExportFormat::GraphMl => {
            out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<graphml xmlns=\"http://graphml.graphdrawing.org/xmlns\">\n");
            out.push_str("  <key id=\"name\" for=\"node\" attr.name=\"name\" attr.type=\"string\"/>\n");
            out.push_str("  <key id=\"mentions\" for=\"node\" attr.name=\"mentions\" attr.type=\"int\"/>\n");
            out.push_str("  <key id=\"community\" for=\"node\" attr.name=\"community\" attr.type=\"int\"/>\n");
            out.push_str("  <key id=\"weight\" for=\"edge\" attr.name=\"weight\" attr.type=\"double\"/>\n");
            out.push_str("  <key id=\"relations\" for=\"edge\" attr.name=\"relations\" attr.type=\"string\"/>\n");
            out.push_str("  <graph id=\"knowledge\" edgedefault=\"undirected\">\n");
            for (i, e) in kg.entities.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "    <node id=\"n{i}\"><data key=\"name\">{}</data><data key=\"mentions\">{}</data><data key=\"community\">{}</data></node>",
                    xml_escape(&e.name),
                    e.mentions,
                    e.community
                );
            }
            for (j, edge) in kg.graph.edge_references().enumerate() {
                let d = edge.weight();
                let rel: Vec<&str> = d.relations.iter().map(|(k, _, _)| k.as_str()).collect();
                let _ = writeln!(
                    out,
                    "    <edge id=\"e{j}\" source=\"n{}\" target=\"n{}\"><data key=\"weight\">{:.4}</data><data key=\"relations\">{}</data></edge>",
                    edge.source().index(),
                    edge.target().index(),
                    d.weight,
                    rel.join(",")
                );
            }
            out.push_str("  </graph>\n</graphml>\n");
        }
    }
    out
}
