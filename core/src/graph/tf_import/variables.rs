//! TensorFlow's variables onto Magpie's named variables: ref variables (`VariableV2`,
//! `Assign`, `Apply*`) and resource variables (`VarHandleOp` with a handle output,
//! `ReadVariableOp(handle)`, `AssignVariableOp(handle, value)`, `ResourceApply*`).
//!
//! Magpie's variable ops name their variable by attributes (`container`, `shared_name`,
//! `dtype`; see [`crate::distributed::ops`] and [`crate::distributed::training`]) and
//! take no handle, so every handle or ref input is resolved here, statically, to the
//! node that declares the variable: a `VarHandleOp` or `VariableV2` of this `GraphDef`
//! or of the graph it extends, directly or through `Identity` (of a handle) or
//! `RefIdentity` (of a ref). An empty `shared_name` means the node's name, as in
//! TensorFlow. The translation:
//!
//! - `VarHandleOp` stays (it declares the variable; it has no output in Magpie); an
//!   `Identity` of a handle becomes a `VarHandleOp` of the same variable;
//! - `VariableV2` becomes Magpie's `VariableV2`, the read of the variable (so fetching
//!   `"v:0"` gives its value, or fails on an uninitialised variable as TensorFlow's
//!   does); a `RefIdentity` of it becomes one too;
//! - the ops that take a handle or a ref (`ReadVariableOp`, `Assign*`,
//!   `VarIsInitializedOp`/`IsVariableInitialized`, `ResourceApply*`/`Apply*`) become the
//!   Magpie op of the same meaning with the variable (and the optimizer's slots) in
//!   attributes and the other inputs unchanged;
//! - any other op that reads a ref variable as a value gets the value at the time it
//!   runs, as TensorFlow's dereference does: an `Identity` (`"v/read"`) becomes a
//!   `ReadVariableOp`, and another op gets a `ReadVariableOp` of its own, named
//!   `<node>/_magpie_read_<input>`, that waits for the node's control inputs.
//!
//! Every op that touches a variable is colocated with the node that declares it
//! ([`COLOCATE_ATTR`]), and a declaration with the node its `_class: loc:@name` names (an
//! optimizer's slots with their variable): TensorFlow colocates the consumers of a handle or a ref with the
//! variable, and the variable's value lives in the resource manager of the task that
//! runs its ops. Every node keeps its name, so fetches such as `"v/read:0"` and targets
//! such as `"train"` resolve unchanged.
//!
//! Not translated: a handle consumed by any other op (`ResourceGather`, a function
//! call, ...) is an error naming the node; control inputs on a `VariableV2` (which would
//! read it) are dropped, since TensorFlow's variable node does nothing a step waits for.

use std::collections::HashMap;

use crate::distributed::ops::COLOCATE_ATTR;
use crate::distributed::training::{
    self, APPLY_ADAM, APPLY_GRADIENT_DESCENT, APPLY_MOMENTUM, ASSIGN_SUB, IS_INITIALIZED,
    SLOT_CONTAINERS_ATTR, SLOT_NAMES_ATTR, VARIABLE_V2,
};
use crate::graph::attr::{AttrError, AttrValue};
use crate::graph::builder::Graph;
use crate::graph::error::{GraphError, OpDefError};
use crate::graph::graph_def::{GraphDef, NodeDef};
use crate::tensor::DType;

/// How TensorFlow refers to a variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A `resource` handle (`VarHandleOp`).
    Resource,
    /// A reference (`VariableV2`).
    Ref,
}

/// A variable as its consumers need it.
#[derive(Clone, Debug, PartialEq)]
struct Var {
    kind: Kind,
    container: String,
    shared_name: String,
    dtype: DType,
    /// The node that declares it: every op of the variable is colocated with it.
    anchor: String,
}

/// A TensorFlow op that takes variables, and the Magpie op it becomes.
struct Consumer {
    tf: &'static str,
    magpie: &'static str,
    /// How many leading data inputs are variables (the variable, then its slots).
    vars: usize,
    kind: Kind,
    /// The attribute holding the variable's dtype, if the op has one.
    dtype_attr: Option<&'static str>,
}

const fn c(
    tf: &'static str,
    magpie: &'static str,
    vars: usize,
    kind: Kind,
    dtype_attr: Option<&'static str>,
) -> Consumer {
    Consumer {
        tf,
        magpie,
        vars,
        kind,
        dtype_attr,
    }
}

const CONSUMERS: &[Consumer] = &[
    c(
        "ReadVariableOp",
        "ReadVariableOp",
        1,
        Kind::Resource,
        Some("dtype"),
    ),
    c(
        "AssignVariableOp",
        "AssignVariableOp",
        1,
        Kind::Resource,
        Some("dtype"),
    ),
    c(
        "AssignAddVariableOp",
        "AssignAddVariableOp",
        1,
        Kind::Resource,
        Some("dtype"),
    ),
    c(
        "AssignSubVariableOp",
        ASSIGN_SUB,
        1,
        Kind::Resource,
        Some("dtype"),
    ),
    c(
        "VarIsInitializedOp",
        IS_INITIALIZED,
        1,
        Kind::Resource,
        None,
    ),
    c(
        "ResourceApplyGradientDescent",
        APPLY_GRADIENT_DESCENT,
        1,
        Kind::Resource,
        Some("T"),
    ),
    c(
        "ResourceApplyMomentum",
        APPLY_MOMENTUM,
        2,
        Kind::Resource,
        Some("T"),
    ),
    c(
        "ResourceApplyAdam",
        APPLY_ADAM,
        3,
        Kind::Resource,
        Some("T"),
    ),
    c("Assign", "AssignVariableOp", 1, Kind::Ref, Some("T")),
    c("AssignAdd", "AssignAddVariableOp", 1, Kind::Ref, Some("T")),
    c("AssignSub", ASSIGN_SUB, 1, Kind::Ref, Some("T")),
    c(
        "IsVariableInitialized",
        IS_INITIALIZED,
        1,
        Kind::Ref,
        Some("dtype"),
    ),
    c(
        "ApplyGradientDescent",
        APPLY_GRADIENT_DESCENT,
        1,
        Kind::Ref,
        Some("T"),
    ),
    c("ApplyMomentum", APPLY_MOMENTUM, 2, Kind::Ref, Some("T")),
    c("ApplyAdam", APPLY_ADAM, 3, Kind::Ref, Some("T")),
];

/// Rewrites the variable ops of `def` into Magpie's variable ops (see the module docs).
///
/// # Errors
/// [`GraphError::InvalidNode`] naming the node when a variable declaration lacks its
/// dtype, or a handle or ref input cannot be resolved to a variable.
pub(super) fn rewrite(def: &mut GraphDef, existing: &Graph) -> Result<(), GraphError> {
    training::ensure_registered();
    let vars = declared(def, existing)?;
    let names: HashMap<&str, usize> = def
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let resolver = Resolver {
        vars: &vars,
        names: &names,
        existing,
    };
    let mut added = Vec::new();
    let mut out = Vec::with_capacity(def.nodes.len());
    for node in &def.nodes {
        out.push(rewrite_node(node, &resolver, &mut added)?);
    }
    out.extend(added);
    def.nodes = out;
    Ok(())
}

/// The variables declared in `def`: its `VarHandleOp`/`VariableV2` nodes and the
/// `Identity`/`RefIdentity` chains over them (or over a declaration in `existing`), by
/// node name.
fn declared(def: &GraphDef, existing: &Graph) -> Result<HashMap<String, Var>, GraphError> {
    let mut vars = HashMap::new();
    for n in &def.nodes {
        let kind = match n.op.as_str() {
            "VarHandleOp" => Kind::Resource,
            "VariableV2" | "Variable" => Kind::Ref,
            _ => continue,
        };
        let container = str_attr(n, "container").unwrap_or_default();
        let shared_name = match str_attr(n, "shared_name") {
            Some(s) if !s.is_empty() => s,
            _ => n.name.clone(),
        };
        let dtype = match attr(n, "dtype") {
            Some(AttrValue::DType(t)) => *t,
            _ => {
                return Err(invalid(
                    n,
                    OpDefError::Attr(AttrError::Missing("dtype".into())),
                ))
            }
        };
        vars.insert(
            n.name.clone(),
            Var {
                kind,
                container,
                shared_name,
                dtype,
                anchor: n.name.clone(),
            },
        );
    }
    // Aliases: follow each `Identity`/`RefIdentity` chain to its end once, remembering
    // the answer for every node on it (linear in the nodes, whatever their order; a
    // cycle resolves to nothing and Magpie's import reports it).
    let index: HashMap<&str, usize> = def
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut done: Vec<Option<Option<Var>>> = def
        .nodes
        .iter()
        .map(|n| vars.get(&n.name).map(|v| Some(v.clone())))
        .collect();
    for start in 0..def.nodes.len() {
        let mut path: Vec<(usize, Kind)> = Vec::new();
        let mut on_path = std::collections::HashSet::new();
        let mut cur = start;
        let found = loop {
            if let Some(known) = &done[cur] {
                break known.clone();
            }
            let n = &def.nodes[cur];
            let wants = match n.op.as_str() {
                "Identity" => Kind::Resource,
                "RefIdentity" => Kind::Ref,
                _ => break None,
            };
            if !on_path.insert(cur) {
                break None;
            }
            path.push((cur, wants));
            let Some((src, 0)) = data_inputs(n).next().map(parse_input) else {
                break None;
            };
            match index.get(src) {
                Some(&next) => cur = next,
                None => break existing_var(existing, src),
            }
        };
        if path.is_empty() {
            done[start].get_or_insert(found);
            continue;
        }
        let mut result = found;
        for (node, wants) in path.into_iter().rev() {
            result = result.filter(|v| v.kind == wants);
            done[node] = Some(result.clone());
        }
    }
    for (n, v) in def.nodes.iter().zip(done) {
        if let Some(Some(v)) = v {
            vars.entry(n.name.clone()).or_insert(v);
        }
    }
    Ok(vars)
}

/// The variable a node of an earlier extension declares (already translated: a Magpie
/// `VarHandleOp` or `VariableV2`), if it is one.
fn existing_var(existing: &Graph, name: &str) -> Option<Var> {
    let node = existing.node(existing.node_by_name(name)?)?;
    let kind = match node.op.as_str() {
        "VarHandleOp" => Kind::Resource,
        VARIABLE_V2 => Kind::Ref,
        _ => return None,
    };
    let a = &node.attrs;
    Some(Var {
        kind,
        container: a.string("container").unwrap_or_default(),
        shared_name: a.string("shared_name").ok()?,
        dtype: a.dtype("dtype").ok()?,
        anchor: a
            .string(COLOCATE_ATTR)
            .unwrap_or_else(|_| node.name.clone()),
    })
}

/// Finds the variable behind an input, in the `GraphDef` or in the graph it extends.
struct Resolver<'a> {
    vars: &'a HashMap<String, Var>,
    names: &'a HashMap<&'a str, usize>,
    existing: &'a Graph,
}

impl Resolver<'_> {
    fn resolve(&self, input: &str) -> Option<Var> {
        let (name, index) = parse_input(input);
        if index != 0 {
            return None;
        }
        if let Some(v) = self.vars.get(name) {
            return Some(v.clone());
        }
        if self.names.contains_key(name) {
            return None;
        }
        // A node of an earlier extension, already translated.
        existing_var(self.existing, name)
    }
}

fn rewrite_node(
    n: &NodeDef,
    r: &Resolver<'_>,
    added: &mut Vec<NodeDef>,
) -> Result<NodeDef, GraphError> {
    let mut out = n.clone();
    let control: Vec<String> = control_inputs(n)
        .filter(|s| {
            // A control input on a ref variable's node would read it: dropped.
            r.resolve(&s[1..]).is_none_or(|v| v.kind == Kind::Resource)
        })
        .map(str::to_string)
        .collect();
    // A declaration or an alias of one.
    if let Some(v) = r.vars.get(&n.name) {
        out.op = match v.kind {
            Kind::Resource => "VarHandleOp".into(),
            Kind::Ref => VARIABLE_V2.into(),
        };
        set_var_attrs(&mut out, v, v.dtype);
        if v.anchor == n.name {
            // A declaration goes where its `_class: loc:@other` says (an optimizer's slot
            // beside its variable, which the update reads from the same task), else where
            // its device says.
            match colocation_class(n) {
                Some(other) => set_attr(&mut out, COLOCATE_ATTR, other),
                None => remove_attr(&mut out, COLOCATE_ATTR),
            }
        }
        out.inputs = control;
        return Ok(out);
    }
    let data: Vec<&str> = data_inputs(n).collect();
    let (_vars, rest): (Vec<Var>, &[&str]) =
        if let Some(cons) = CONSUMERS.iter().find(|c| c.tf == n.op) {
            if data.len() < cons.vars {
                return Err(invalid(
                    n,
                    OpDefError::Invalid(format!(
                        "expected {} variable inputs, got {} inputs",
                        cons.vars,
                        data.len()
                    )),
                ));
            }
            let mut vars = Vec::with_capacity(cons.vars);
            for (k, input) in data[..cons.vars].iter().enumerate() {
                match r.resolve(input) {
                    Some(v) if v.kind == cons.kind => vars.push(v),
                    _ => {
                        return Err(invalid(
                            n,
                            OpDefError::Invalid(format!(
                                "input {k} ({input:?}) must be {}; Magpie resolves variables \
                                 statically, from the declaring node directly or through {}",
                                match cons.kind {
                                    Kind::Resource => "a resource variable's handle (VarHandleOp)",
                                    Kind::Ref => "a ref variable (VariableV2)",
                                },
                                match cons.kind {
                                    Kind::Resource => "Identity",
                                    Kind::Ref => "RefIdentity",
                                },
                            )),
                        ))
                    }
                }
            }
            let dtype = match cons.dtype_attr.and_then(|a| attr(n, a)) {
                Some(AttrValue::DType(t)) => *t,
                _ => vars[0].dtype,
            };
            out.op = cons.magpie.into();
            set_var_attrs(&mut out, &vars[0], dtype);
            if vars.len() > 1 {
                let slots = &vars[1..];
                set_attr(
                    &mut out,
                    SLOT_CONTAINERS_ATTR,
                    slots
                        .iter()
                        .map(|v| v.container.clone())
                        .collect::<Vec<_>>(),
                );
                set_attr(
                    &mut out,
                    SLOT_NAMES_ATTR,
                    slots
                        .iter()
                        .map(|v| v.shared_name.clone())
                        .collect::<Vec<_>>(),
                );
            }
            (vars, &data[cons.vars..])
        } else if n.op == "Identity" && data.len() == 1 {
            // `v/read`: the read of a ref variable keeps its name.
            match r.resolve(data[0]) {
                Some(v) if v.kind == Kind::Ref => {
                    let dtype = match attr(n, "T") {
                        Some(AttrValue::DType(t)) => *t,
                        _ => v.dtype,
                    };
                    out.op = "ReadVariableOp".into();
                    set_var_attrs(&mut out, &v, dtype);
                    (vec![v], &[])
                }
                _ => (Vec::new(), &data[..]),
            }
        } else {
            (Vec::new(), &data[..])
        };
    // The remaining data inputs: a ref variable read as a value gets a read of its own.
    let mut inputs = Vec::with_capacity(n.inputs.len());
    let first_input = data.len() - rest.len();
    for (k, input) in rest.iter().enumerate() {
        match r.resolve(input) {
            None => inputs.push((*input).to_string()),
            Some(v) if v.kind == Kind::Ref => {
                let name = format!("{}/_magpie_read_{}", n.name, first_input + k);
                let mut read = NodeDef {
                    name: name.clone(),
                    op: "ReadVariableOp".into(),
                    inputs: control.clone(),
                    device: String::new(),
                    attrs: Vec::new(),
                };
                set_var_attrs(&mut read, &v, v.dtype);
                added.push(read);
                inputs.push(name);
            }
            Some(_) => {
                return Err(invalid(
                    n,
                    OpDefError::Invalid(format!(
                        "input {} ({input:?}) is a resource variable's handle, which Magpie \
                         translates only for the variable ops (ReadVariableOp, \
                         AssignVariableOp, ResourceApply*, ...)",
                        first_input + k
                    )),
                ))
            }
        }
    }
    inputs.extend(control);
    out.inputs = inputs;
    Ok(out)
}

/// Sets the attributes naming `v` (read or written as `dtype`) and the colocation.
fn set_var_attrs(n: &mut NodeDef, v: &Var, dtype: DType) {
    set_attr(n, "container", v.container.as_str());
    set_attr(n, "shared_name", v.shared_name.as_str());
    set_attr(n, "dtype", dtype);
    set_attr(n, COLOCATE_ATTR, v.anchor.as_str());
}

/// The node that TensorFlow's `_class: ["loc:@name"]` colocates `n` with, if another.
fn colocation_class(n: &NodeDef) -> Option<String> {
    let Some(AttrValue::Strs(classes)) = attr(n, "_class") else {
        return None;
    };
    classes
        .iter()
        .filter_map(|c| c.strip_prefix("loc:@"))
        .find(|other| *other != n.name)
        .map(str::to_string)
}

fn attr<'a>(n: &'a NodeDef, name: &str) -> Option<&'a AttrValue> {
    n.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn str_attr(n: &NodeDef, name: &str) -> Option<String> {
    match attr(n, name) {
        Some(AttrValue::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

fn set_attr(n: &mut NodeDef, name: &str, value: impl Into<AttrValue>) {
    let value = value.into();
    match n.attrs.iter_mut().find(|(k, _)| k == name) {
        Some((_, v)) => *v = value,
        None => n.attrs.push((name.to_string(), value)),
    }
}

fn remove_attr(n: &mut NodeDef, name: &str) {
    n.attrs.retain(|(k, _)| k != name);
}

fn data_inputs(n: &NodeDef) -> impl Iterator<Item = &str> {
    n.inputs
        .iter()
        .map(String::as_str)
        .filter(|s| !s.starts_with('^'))
}

fn control_inputs(n: &NodeDef) -> impl Iterator<Item = &str> {
    n.inputs
        .iter()
        .map(String::as_str)
        .filter(|s| s.starts_with('^'))
}

/// `"name:k"` as (name, k); `"name"` is output 0.
fn parse_input(s: &str) -> (&str, u32) {
    match s.rsplit_once(':') {
        Some((name, k)) => match k.parse() {
            Ok(k) => (name, k),
            Err(_) => (s, 0),
        },
        None => (s, 0),
    }
}

fn invalid(n: &NodeDef, reason: OpDefError) -> GraphError {
    GraphError::InvalidNode {
        node: n.name.clone(),
        op: n.op.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    fn node(name: &str, op: &str, inputs: &[&str], attrs: Vec<(&str, AttrValue)>) -> NodeDef {
        NodeDef {
            name: name.into(),
            op: op.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            device: String::new(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    fn f32_attr(k: &str) -> (&str, AttrValue) {
        (k, DType::F32.into())
    }

    fn konst(name: &str) -> NodeDef {
        node(
            name,
            "Const",
            &[],
            vec![("value", Tensor::scalar(1.0f32).into()), f32_attr("dtype")],
        )
    }

    fn translated(def: GraphDef, existing: &Graph) -> Result<GraphDef, GraphError> {
        let mut def = def;
        rewrite(&mut def, existing)?;
        Ok(def)
    }

    fn find<'a>(def: &'a GraphDef, name: &str) -> &'a NodeDef {
        def.nodes.iter().find(|n| n.name == name).unwrap()
    }

    fn s(n: &NodeDef, k: &str) -> String {
        str_attr(n, k).unwrap_or_else(|| panic!("{} has no {k}", n.name))
    }

    #[test]
    fn ref_variables_become_named_reads_and_updates() {
        let def = GraphDef {
            nodes: vec![
                node(
                    "v",
                    "VariableV2",
                    &[],
                    vec![f32_attr("dtype"), ("shared_name", "".into())],
                ),
                konst("one"),
                node("v/Assign", "Assign", &["v", "one"], vec![f32_attr("T")]),
                node("v/read", "Identity", &["v"], vec![f32_attr("T")]),
                node(
                    "twice",
                    "Mul",
                    &["one", "v", "^v/Assign", "^v"],
                    vec![f32_attr("T")],
                ),
            ],
        };
        let out = translated(def, &Graph::new()).unwrap();
        let v = find(&out, "v");
        assert_eq!(
            (v.op.as_str(), s(v, "shared_name")),
            (VARIABLE_V2, "v".into())
        );
        let assign = find(&out, "v/Assign");
        assert_eq!(assign.op, "AssignVariableOp");
        assert_eq!(assign.inputs, vec!["one".to_string()]);
        assert_eq!(s(assign, COLOCATE_ATTR), "v");
        let read = find(&out, "v/read");
        assert_eq!(read.op, "ReadVariableOp");
        assert!(read.inputs.is_empty());
        // A dereference elsewhere gets its own read, after the node's control inputs; the
        // control input on the variable (a read) is gone.
        let twice = find(&out, "twice");
        assert_eq!(
            twice.inputs,
            vec!["one", "twice/_magpie_read_1", "^v/Assign"]
        );
        let own = find(&out, "twice/_magpie_read_1");
        assert_eq!(own.op, "ReadVariableOp");
        assert_eq!(own.inputs, vec!["^v/Assign"]);
        assert_eq!(s(own, "shared_name"), "v");
        // And Magpie's import accepts the result.
        Graph::import(&out).unwrap();
    }

    #[test]
    fn resource_handles_resolve_directly_through_identity_and_across_extensions() {
        let def = GraphDef {
            nodes: vec![
                node(
                    "h",
                    "VarHandleOp",
                    &[],
                    vec![
                        f32_attr("dtype"),
                        ("shared_name", "weights".into()),
                        ("container", "c".into()),
                    ],
                ),
                node(
                    "h2",
                    "Identity",
                    &["h"],
                    vec![("T", AttrValue::Str("resource".into()))],
                ),
                konst("one"),
                node(
                    "init",
                    "AssignVariableOp",
                    &["h2", "one"],
                    vec![f32_attr("dtype")],
                ),
            ],
        };
        let g = Graph::new();
        let out = translated(def, &g).unwrap();
        let alias = find(&out, "h2");
        assert_eq!(alias.op, "VarHandleOp");
        assert_eq!(s(alias, COLOCATE_ATTR), "h");
        let init = find(&out, "init");
        assert_eq!(
            (s(init, "container"), s(init, "shared_name")),
            ("c".into(), "weights".into())
        );
        assert_eq!(s(init, COLOCATE_ATTR), "h");
        g.extend(&out).unwrap();
        // A later GraphDef reads through the alias the graph already holds.
        let later = GraphDef {
            nodes: vec![node(
                "r",
                "ReadVariableOp",
                &["h2"],
                vec![f32_attr("dtype")],
            )],
        };
        let out = translated(later, &g).unwrap();
        let r = find(&out, "r");
        assert!(r.inputs.is_empty());
        assert_eq!(
            (s(r, "shared_name"), s(r, COLOCATE_ATTR)),
            ("weights".into(), "h".into())
        );
    }

    #[test]
    fn long_identity_chains_in_any_order_resolve_to_their_variable() {
        // The chain's nodes listed last to first; then one more alias over a handle the
        // graph already holds.
        let n = 5000;
        let mut nodes: Vec<NodeDef> = (1..=n)
            .rev()
            .map(|i| {
                let input = if i == 1 {
                    "h".to_string()
                } else {
                    format!("id{}", i - 1)
                };
                node(&format!("id{i}"), "Identity", &[&input], vec![])
            })
            .collect();
        nodes.push(node("h", "VarHandleOp", &[], vec![f32_attr("dtype")]));
        nodes.push(node(
            "r",
            "ReadVariableOp",
            &[&format!("id{n}")],
            vec![f32_attr("dtype")],
        ));
        let g = Graph::new();
        let out = translated(GraphDef { nodes }, &g).unwrap();
        let r = find(&out, "r");
        assert_eq!(
            (s(r, "shared_name"), s(r, COLOCATE_ATTR)),
            ("h".into(), "h".into())
        );
        assert_eq!(find(&out, &format!("id{n}")).op, "VarHandleOp");
        g.extend(&out).unwrap();
        let later = GraphDef {
            nodes: vec![
                node("again", "Identity", &["h"], vec![]),
                node("r2", "ReadVariableOp", &["again"], vec![f32_attr("dtype")]),
            ],
        };
        let out = translated(later, &g).unwrap();
        assert_eq!(find(&out, "again").op, "VarHandleOp");
        assert_eq!(s(find(&out, "r2"), COLOCATE_ATTR), "h");
    }

    #[test]
    fn optimizer_slots_are_named_in_attributes() {
        let var = |n: &str| node(n, "VarHandleOp", &[], vec![f32_attr("dtype")]);
        let mut slot = var("w/Momentum");
        slot.attrs
            .push(("_class".into(), AttrValue::Strs(vec!["loc:@w".into()])));
        let mut w = var("w");
        w.attrs
            .push(("_class".into(), AttrValue::Strs(vec!["loc:@w".into()])));
        let def = GraphDef {
            nodes: vec![
                w,
                slot,
                konst("lr"),
                konst("g"),
                node(
                    "up",
                    "ResourceApplyMomentum",
                    &["w", "w/Momentum", "lr", "g", "lr"],
                    vec![f32_attr("T"), ("use_nesterov", true.into())],
                ),
            ],
        };
        let out = translated(def, &Graph::new()).unwrap();
        // The slot follows its `_class` to the variable's task.
        assert_eq!(s(find(&out, "w/Momentum"), COLOCATE_ATTR), "w");
        assert!(attr(find(&out, "w"), COLOCATE_ATTR).is_none());
        let up = find(&out, "up");
        assert_eq!(up.op, APPLY_MOMENTUM);
        assert_eq!(up.inputs, vec!["lr", "g", "lr"]);
        assert_eq!(
            attr(up, SLOT_NAMES_ATTR),
            Some(&AttrValue::Strs(vec!["w/Momentum".into()]))
        );
        Graph::import(&out).unwrap();
    }

    #[test]
    fn unresolvable_handles_are_errors_naming_the_node() {
        let h = node("h", "VarHandleOp", &[], vec![f32_attr("dtype")]);
        // A handle that is not a variable's.
        let def = GraphDef {
            nodes: vec![
                konst("one"),
                node("r", "ReadVariableOp", &["one"], vec![f32_attr("dtype")]),
            ],
        };
        let e = translated(def, &Graph::new()).unwrap_err().to_string();
        assert!(e.contains("\"r\"") && e.contains("ReadVariableOp"), "{e}");
        // A handle consumed by an op Magpie does not translate.
        let def = GraphDef {
            nodes: vec![
                h.clone(),
                node("gather", "ResourceGather", &["h", "h"], vec![]),
            ],
        };
        let e = translated(def, &Graph::new()).unwrap_err().to_string();
        assert!(e.contains("gather") && e.contains("handle"), "{e}");
        // A ref op over a resource variable.
        let def = GraphDef {
            nodes: vec![
                h,
                konst("one"),
                node("a", "Assign", &["h", "one"], vec![f32_attr("T")]),
            ],
        };
        let e = translated(def, &Graph::new()).unwrap_err().to_string();
        assert!(e.contains("VariableV2") && e.contains("\"a\""), "{e}");
        // A declaration without its dtype.
        let def = GraphDef {
            nodes: vec![node("v", "VariableV2", &[], vec![])],
        };
        let e = translated(def, &Graph::new()).unwrap_err().to_string();
        assert!(e.contains("dtype") && e.contains("\"v\""), "{e}");
    }
}
