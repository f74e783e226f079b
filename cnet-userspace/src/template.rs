//! The part of Go's text/template that Docker users write in `--format`:
//! `{{.A.B}}`, `{{json .X}}`, `{{range .X}}...{{end}}`, `{{if .X}}...{{else}}...{{end}}`,
//! `{{index .X "key"}}`, `{{(index .X "key").Y}}`, `{{join .X ","}}`,
//! `{{upper .X}}`, `{{lower .X}}`, `{{println}}`, `{{-`/`-}}` trimming, and
//! `table` for aligned columns with a header. Values print as Go prints them
//! (`<no value>` for a missing key, `map[k:v]`, `[a b]`).
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

#[derive(Debug)]
enum Node {
    Text(String),
    Out(Expr),
    Range(Expr, Vec<Node>, Vec<Node>),
    If(Expr, Vec<Node>, Vec<Node>),
}

#[derive(Debug)]
enum Expr {
    /// `.A.B` relative to dot; `$.A` relative to the root.
    Field {
        root: bool,
        path: Vec<String>,
    },
    /// `(PIPE).A.B`
    Sub(Box<Expr>, Vec<String>),
    Str(String),
    /// An integer constant (`index .X 0`).
    Num(u64),
    Call(String, Vec<Expr>),
}

/// A parsed `--format` template.
#[derive(Debug)]
pub struct Template {
    nodes: Vec<Node>,
    /// `table ...`: a header row and tab-aligned columns.
    table: bool,
    source: String,
}

impl Template {
    pub fn parse(src: &str) -> Result<Self> {
        let (table, body) = match src.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, src),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let toks = lex(&body).with_context(|| format!("--format {src:?}"))?;
        let mut it = toks.into_iter().peekable();
        let (nodes, end) = parse_nodes(&mut it).with_context(|| format!("--format {src:?}"))?;
        ensure!(
            end.is_none(),
            "--format {src:?}: unexpected {{{{{}}}}}",
            end.unwrap_or_default()
        );
        Ok(Self {
            nodes,
            table,
            source: src.to_string(),
        })
    }

    pub fn is_table(&self) -> bool {
        self.table
    }

    /// The template applied to one value.
    pub fn render(&self, v: &Value) -> Result<String> {
        let mut out = String::new();
        render(&self.nodes, v, v, &mut out)
            .with_context(|| format!("--format {:?}", self.source))?;
        Ok(out)
    }

    /// Every value, one line each; with `table`, a header first (each
    /// `{{.Field}}` named by `header`) and the columns aligned as Docker's
    /// tabwriter does (3 spaces between columns).
    pub fn render_all(&self, values: &[Value], header: impl Fn(&str) -> String) -> Result<String> {
        let mut lines = Vec::new();
        if self.table {
            let mut h = String::new();
            head(&self.nodes, &header, &mut h);
            lines.push(h);
        }
        for v in values {
            lines.push(self.render(v)?);
        }
        if !self.table {
            return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
        }
        Ok(align(&lines))
    }
}

fn head(nodes: &[Node], header: &impl Fn(&str) -> String, out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Out(Expr::Field { path, .. }) => out.push_str(&header(&path.join("."))),
            Node::Out(Expr::Call(f, args)) if f == "json" && args.len() == 1 => {
                if let Expr::Field { path, .. } = &args[0] {
                    out.push_str(&header(&path.join(".")));
                }
            }
            _ => {}
        }
    }
}

/// Tab-separated cells padded to their column's width plus 3.
fn align(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter(|r| i + 1 < r.len())
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < r.len() {
                out.push_str(&" ".repeat(width[i] - cell.chars().count() + 3));
            }
        }
        out.push('\n');
    }
    out
}

#[derive(Debug)]
enum Tok {
    Text(String),
    Action(String),
}

fn lex(s: &str) -> Result<Vec<Tok>> {
    let mut toks = Vec::new();
    let mut rest = s;
    let mut trim_next = false;
    while let Some(a) = rest.find("{{") {
        let mut text = rest[..a].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        let inner_start = a + 2;
        let b = rest[inner_start..]
            .find("}}")
            .map(|b| inner_start + b)
            .context("unclosed {{")?;
        let mut inner = &rest[inner_start..b];
        if let Some(i) = inner.strip_prefix('-') {
            text = text.trim_end().to_string();
            inner = i;
        }
        trim_next = false;
        if let Some(i) = inner.strip_suffix('-') {
            trim_next = true;
            inner = i;
        }
        if !text.is_empty() {
            toks.push(Tok::Text(text));
        }
        toks.push(Tok::Action(inner.trim().to_string()));
        rest = &rest[b + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        toks.push(Tok::Text(text.to_string()));
    }
    Ok(toks)
}

/// Nodes up to `{{end}}` or `{{else}}` (returned as the second value).
fn parse_nodes(
    it: &mut std::iter::Peekable<std::vec::IntoIter<Tok>>,
) -> Result<(Vec<Node>, Option<String>)> {
    let mut nodes = Vec::new();
    while let Some(t) = it.next() {
        match t {
            Tok::Text(s) => nodes.push(Node::Text(s)),
            Tok::Action(a) => {
                if a == "end" || a == "else" {
                    return Ok((nodes, Some(a)));
                }
                let (kw, rest) = a.split_once(char::is_whitespace).unwrap_or((&a, ""));
                if kw == "range" || kw == "if" {
                    let e = parse_expr(rest.trim())?;
                    let (body, end) = parse_nodes(it)?;
                    let els = match end.as_deref() {
                        Some("end") => Vec::new(),
                        Some("else") => {
                            let (els, end) = parse_nodes(it)?;
                            ensure!(
                                end.as_deref() == Some("end"),
                                "{{{{{kw}}}}} without {{{{end}}}}"
                            );
                            els
                        }
                        _ => bail!("{{{{{kw}}}}} without {{{{end}}}}"),
                    };
                    nodes.push(if kw == "range" {
                        Node::Range(e, body, els)
                    } else {
                        Node::If(e, body, els)
                    });
                } else if a.starts_with("/*") {
                    // A comment.
                } else {
                    nodes.push(Node::Out(parse_expr(&a)?));
                }
            }
        }
    }
    Ok((nodes, None))
}

/// Splits an action into words: quoted strings and parenthesized groups
/// (with what follows the closing parenthesis) stay whole.
fn words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    let mut quote = false;
    for ch in s.chars() {
        match ch {
            '"' if depth == 0 => {
                quote = !quote;
                cur.push(ch);
            }
            '(' if !quote => {
                depth += 1;
                cur.push(ch);
            }
            ')' if !quote => {
                ensure!(depth > 0, "unbalanced ')' in {s:?}");
                depth -= 1;
                cur.push(ch);
            }
            c if c.is_whitespace() && !quote && depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    ensure!(
        !quote && depth == 0,
        "unclosed quote or parenthesis in {s:?}"
    );
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

const FUNCS: &[&str] = &["json", "index", "join", "upper", "lower", "println", "len"];

fn parse_expr(s: &str) -> Result<Expr> {
    let w = words(s)?;
    let Some(first) = w.first() else {
        bail!("empty action");
    };
    if FUNCS.contains(&first.as_str()) {
        let args = w[1..].iter().map(|a| parse_arg(a)).collect::<Result<_>>()?;
        return Ok(Expr::Call(first.clone(), args));
    }
    ensure!(w.len() == 1, "function {first:?} is not supported");
    parse_arg(first)
}

fn parse_arg(a: &str) -> Result<Expr> {
    if let Some(inner) = a.strip_prefix('"') {
        let s = inner
            .strip_suffix('"')
            .with_context(|| format!("bad string {a}"))?;
        return Ok(Expr::Str(s.replace("\\t", "\t").replace("\\n", "\n")));
    }
    if let Ok(n) = a.parse::<u64>() {
        return Ok(Expr::Num(n));
    }
    if let Some(rest) = a.strip_prefix('(') {
        let close = rest.rfind(')').with_context(|| format!("unbalanced {a}"))?;
        let inner = parse_expr(&rest[..close])?;
        let path = fields(&rest[close + 1..])?;
        return Ok(Expr::Sub(Box::new(inner), path));
    }
    if let Some(rest) = a.strip_prefix('$') {
        return Ok(Expr::Field {
            root: true,
            path: fields(rest)?,
        });
    }
    ensure!(a.starts_with('.'), "unsupported expression {a:?}");
    Ok(Expr::Field {
        root: false,
        path: fields(a)?,
    })
}

/// `.A.B` -> ["A", "B"]; `.` -> [].
fn fields(s: &str) -> Result<Vec<String>> {
    if s.is_empty() || s == "." {
        return Ok(Vec::new());
    }
    let s = s
        .strip_prefix('.')
        .with_context(|| format!("bad field path {s:?}"))?;
    let parts: Vec<String> = s.split('.').map(str::to_string).collect();
    ensure!(
        parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_')),
        "bad field path .{s}"
    );
    Ok(parts)
}

/// Fields whose values are maps in Docker's types (a missing key there is
/// `<no value>`); everywhere else the objects are structs, and a field that
/// does not exist is an error, as in Docker.
const MAPS: &[&str] = &[
    "Labels",
    "Networks",
    "Options",
    "Ports",
    "PortBindings",
    "ExposedPorts",
    "AuxiliaryAddresses",
    "Containers",
];

fn walk<'a>(mut v: Value, path: &'a [String], mut parent: Option<&'a str>) -> Result<Value> {
    for p in path {
        v = match v {
            Value::Object(mut m) => match m.remove(p) {
                Some(x) => x,
                None if parent.is_some_and(|n| MAPS.contains(&n)) => Value::Null,
                None => bail!("can't evaluate field {p}"),
            },
            Value::Null => Value::Null,
            other => bail!("can't evaluate field {p} in {}", kind(&other)),
        };
        parent = Some(p);
    }
    Ok(v)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

fn eval(e: &Expr, dot: &Value, root: &Value) -> Result<Value> {
    match e {
        Expr::Field { root: r, path } => walk(
            if *r { root.clone() } else { dot.clone() },
            path,
            // Ranging over a map's values leaves dot on a struct.
            None,
        ),
        Expr::Sub(inner, path) => walk(eval(inner, dot, root)?, path, None),
        Expr::Str(s) => Ok(Value::String(s.clone())),
        Expr::Num(n) => Ok(Value::from(*n)),
        Expr::Call(f, args) => {
            let a: Vec<Value> = args
                .iter()
                .map(|x| eval(x, dot, root))
                .collect::<Result<_>>()?;
            match (f.as_str(), a.as_slice()) {
                ("json", [v]) => Ok(Value::String(v.to_string())),
                ("index", [v, keys @ ..]) => {
                    let mut v = v.clone();
                    for k in keys {
                        v = match (v, k) {
                            (Value::Object(mut m), Value::String(k)) => {
                                m.remove(k).unwrap_or(Value::Null)
                            }
                            (Value::Array(a), Value::Number(n)) => n
                                .as_u64()
                                .and_then(|i| a.get(i as usize).cloned())
                                .context("index out of range")?,
                            (v, k) => bail!("can't index {} with {k}", kind(&v)),
                        };
                    }
                    Ok(v)
                }
                ("join", [Value::Array(items), Value::String(sep)]) => Ok(Value::String(
                    items.iter().map(go_string).collect::<Vec<_>>().join(sep),
                )),
                ("upper", [v]) => Ok(Value::String(go_string(v).to_uppercase())),
                ("lower", [v]) => Ok(Value::String(go_string(v).to_lowercase())),
                ("len", [v]) => Ok(Value::from(match v {
                    Value::Array(a) => a.len(),
                    Value::Object(m) => m.len(),
                    Value::String(s) => s.len(),
                    other => bail!("len of {}", kind(other)),
                })),
                ("println", vals) => Ok(Value::String(
                    vals.iter().map(go_string).collect::<Vec<_>>().join(" ") + "\n",
                )),
                (f, _) => bail!("wrong arguments for {f}"),
            }
        }
    }
}

/// Go's truth: false, 0, nil, and empty strings, maps and slices are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// A value as Go's fmt prints it.
pub fn go_string(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_string).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_string(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn render(nodes: &[Node], dot: &Value, root: &Value, out: &mut String) -> Result<()> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Out(e) => out.push_str(&go_string(&eval(e, dot, root)?)),
            Node::If(e, body, els) => {
                let branch = if truthy(&eval(e, dot, root)?) {
                    body
                } else {
                    els
                };
                render(branch, dot, root, out)?;
            }
            Node::Range(e, body, els) => {
                let items: Vec<Value> = match eval(e, dot, root)? {
                    Value::Array(a) => a,
                    // Go ranges over a map's values in key order.
                    Value::Object(m) => m.into_iter().map(|(_, v)| v).collect(),
                    Value::Null => Vec::new(),
                    other => bail!("range can't iterate over {}", kind(&other)),
                };
                if items.is_empty() {
                    render(els, dot, root, out)?;
                }
                for item in &items {
                    render(body, item, root, out)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn r(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    #[test]
    fn dockers_common_formats() {
        let v = json!({"Name": "/web", "State": {"ExitCode": 3, "Running": false},
            "NetworkSettings": {"IPAddress": "172.17.0.2", "Networks": {"a": {"IPAddress": "10.0.0.2"}, "b": {"IPAddress": "10.1.0.2"}}},
            "Config": {"Env": ["A=1", "B=2"], "Labels": {}}});
        assert_eq!(r("{{.NetworkSettings.IPAddress}}", &v), "172.17.0.2");
        assert_eq!(r("{{.State.ExitCode}}", &v), "3");
        assert_eq!(
            r(
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                &v
            ),
            "10.0.0.2 10.1.0.2 "
        );
        assert_eq!(
            r("{{(index .NetworkSettings.Networks \"b\").IPAddress}}", &v),
            "10.1.0.2"
        );
        assert_eq!(r("{{json .Config.Env}}", &v), "[\"A=1\",\"B=2\"]");
        assert_eq!(r("{{join .Config.Env \",\"}}", &v), "A=1,B=2");
        assert_eq!(r("{{if .State.Running}}up{{else}}down{{end}}", &v), "down");
        assert_eq!(r("{{.Config.Labels.tier}}", &v), "<no value>");
        assert_eq!(r("{{index .Config.Labels \"tier\"}}", &v), "<no value>");
        let net = serde_json::json!({"IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}]}});
        assert_eq!(r("{{(index .IPAM.Config 0).Subnet}}", &net), "10.1.0.0/24");
        assert!(
            Template::parse("{{index .IPAM.Config 3}}")
                .unwrap()
                .render(&net)
                .is_err(),
            "out of range"
        );
        assert_eq!(r("{{.Config.Labels}}", &v), "map[]");
        assert_eq!(r("a {{- \" b \" -}} c", &v), "a b c");
        assert_eq!(r("{{range $.Config.Env}}{{.}};{{end}}", &v), "A=1;B=2;");
    }

    #[test]
    fn bad_templates_are_errors_naming_the_template() {
        for t in [
            "{{.A",
            "{{range .A}}x",
            "{{frob .A}}",
            "{{.A..B}}",
            "{{end}}",
        ] {
            let e = Template::parse(t).map(|_| ()).unwrap_err();
            assert!(format!("{e:#}").contains(t), "{t}: {e:#}");
        }
        let e = Template::parse("{{.A.B}}")
            .unwrap()
            .render(&json!({"A": 1}))
            .unwrap_err();
        assert!(format!("{e:#}").contains("field B"), "{e:#}");
        let e = Template::parse("{{.State.Nope}}")
            .unwrap()
            .render(&json!({"State": {}}))
            .unwrap_err();
        assert!(format!("{e:#}").contains("field Nope"), "{e:#}");
    }

    #[test]
    fn tables_have_a_header_and_aligned_columns() {
        let t = Template::parse("table {{.ID}}\t{{.Name}}").unwrap();
        let rows = [
            json!({"ID": "abc", "Name": "x"}),
            json!({"ID": "abcdef", "Name": "y"}),
        ];
        let out = t
            .render_all(&rows, |f| {
                if f == "ID" {
                    "NETWORK ID".into()
                } else {
                    f.to_uppercase()
                }
            })
            .unwrap();
        assert_eq!(out, "NETWORK ID   NAME\nabc          x\nabcdef       y\n");
    }
}
