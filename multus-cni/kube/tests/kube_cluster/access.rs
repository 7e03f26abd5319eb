//! `multus_kube::access` lists what each facade method requests; here each method runs alone
//! through the recording proxy and must make exactly the requests its entry lists.
use multus_kube::{
    EventTarget, EventType, KubeApi,
    access::{self, CodePath},
};
use multus_testkit::kube::{FaultProxy, attributes};
use serde_json::json;

use super::{cluster, create_nad, create_pod, facade_via_proxy};

#[test]
fn each_facade_method_makes_exactly_the_requests_listed_for_it() {
    let Some(cluster) = cluster("each_facade_method_makes_exactly_the_requests_listed_for_it")
    else {
        return;
    };
    let ns = cluster.namespace("acc");
    let uid = create_pod(&ns, "p", &json!({}));
    create_nad(&ns, "n", Some(r#"{"type":"bridge"}"#), &json!({}));
    let proxy = FaultProxy::start(cluster.addr());
    let dir = tempfile::tempdir().unwrap();
    let api = facade_via_proxy(cluster, &proxy, cluster.admin_token(), dir.path());
    let ns = ns.name();
    type Call<'a> = Box<dyn Fn(&KubeApi) + 'a>;
    let calls: Vec<(CodePath, Call<'_>)> = vec![
        (
            access::GET_POD,
            Box::new(|api| drop(api.get_pod(ns, "p").unwrap())),
        ),
        (
            access::GET_NAD,
            Box::new(|api| drop(api.get_nad(ns, "n").unwrap())),
        ),
        (
            access::SET_NETWORK_STATUS,
            Box::new(|api| api.set_network_status(ns, "p", Some(&uid), "[]").unwrap()),
        ),
        (
            access::POST_EVENT,
            Box::new(|api| {
                let pod = api.get_pod(ns, "p").unwrap();
                api.post_event(&EventTarget::pod(&pod), EventType::Normal, "Probe", "probe")
                    .unwrap();
            }),
        ),
    ];
    assert_eq!(
        calls.len(),
        access::FACADE.len(),
        "a facade code path without a case"
    );
    for (path, call) in &calls {
        proxy.clear_requests();
        call(&api);
        let mut made: Vec<(String, String, String)> = proxy
            .requests()
            .iter()
            .map(|r| attributes(&r.method, &r.path))
            .collect();
        made.sort();
        made.dedup();
        // POST_EVENT's case reads the pod first, to name it.
        if path.name == access::POST_EVENT.name {
            made.retain(|(_, resource, verb)| !(resource == "pods" && verb == "get"));
        }
        let mut listed: Vec<(String, String, String)> = path
            .requests
            .iter()
            .map(|a| (a.group.to_owned(), a.resource.to_owned(), a.verb.to_owned()))
            .collect();
        listed.sort();
        assert_eq!(made, listed, "{}", path.name);
    }
}
