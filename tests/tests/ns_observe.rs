//! Observability with real traffic: the datapath's debug log (aya-log) is
//! switched on and off on a running instance and says what happened to
//! packets by name.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use cnet_tests::{
    cnet::Instance,
    netns::{addr, unique_name},
    traffic::{retry, tcp_probe, tcp_request},
};

fn datapath_log(inst: &Instance) -> String {
    inst.ok(&["logs", "--datapath"])
}

#[test]
fn datapath_debug_logs_name_flows_and_drops_and_switch_live() {
    let inst = Instance::up(1, &[]);
    let cg = inst.cgroup.to_string_lossy().into_owned();
    let web = format!("web-{}", unique_name());
    inst.run_server(&web, &["-p", "8080:80"], &[80]);
    let client = inst.topo.clients[0].name.clone();
    let to = format!("{}:8080", addr::host_uplink(0));
    let ctr_ip = inst.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &web]);
    let ctr_ip = ctr_ip.trim();

    // Off (the default): traffic flows and nothing is logged.
    retry(|| tcp_request(&client, &to, "quiet")).unwrap();
    let off = datapath_log(&inst);
    assert!(
        off.contains("debug logs are off") && !off.contains("flow "),
        "no records while off: {off}"
    );

    // On, live: a new connection is logged with both tuples.
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cg, "--debug"]);
    assert_eq!(
        inst.ok(&["inspect", "-f", "{{.Name}}", &web]).trim(),
        format!("/{web}"),
        "up --debug on a running instance keeps its containers"
    );
    let reply = tcp_request(&client, &to, "loud").unwrap();
    assert!(reply.ends_with("loud"), "{reply}");
    let on = datapath_log(&inst);
    let client_ip = addr::client(0);
    let flow = on
        .lines()
        .find(|l| l.contains("flow kind=dnat proto=tcp"))
        .unwrap_or_else(|| panic!("a dnat flow record: {on}"));
    assert!(
        flow.contains(&format!("{client_ip}:"))
            && flow.contains(&format!("-> {}:8080 as ", addr::host_uplink(0)))
            && flow.ends_with(&format!("-> {ctr_ip}:80")),
        "the record shows the tuple before and after DNAT: {flow}"
    );
    assert!(
        !datapath_log(&inst).contains("flow kind=dnat"),
        "records are read once"
    );

    // A drop is logged with its reason's name, and counted exactly.
    let id = inst.ok(&["filter", "add", "--src", &client_ip, "--action", "drop"]);
    inst.assert_drop("drop_filter", 2, "filtered client", || {
        tcp_probe(&client, &to, "blocked")
    });
    let drops = datapath_log(&inst);
    let n = drops
        .lines()
        .filter(|l| l.contains("drop reason=filter"))
        .count();
    assert_eq!(n, 2, "one record per dropped SYN: {drops}");

    // Off again, live: new flows and drops leave no record.
    inst.ok(&["up", "--uplink", "up0", "--cgroup", &cg, "--debug=false"]);
    inst.assert_drop("drop_filter", 2, "filtered client, logs off", || {
        tcp_probe(&client, &to, "blocked")
    });
    inst.ok(&["filter", "rm", id.trim()]);
    retry(|| tcp_request(&client, &to, "quiet again")).unwrap();
    let after = datapath_log(&inst);
    assert!(
        !after.contains("flow ") && !after.contains("drop "),
        "no records once switched off: {after}"
    );
}
