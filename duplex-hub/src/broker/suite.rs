//! One behavioural suite for every [`Broker`]: the memory broker runs it in unit tests; the
//! Redis broker runs it too.

use super::*;
use std::sync::Mutex;

#[derive(Default)]
struct Recorder {
    publications: Mutex<Vec<(String, Arc<Publication>)>>,
    events: Mutex<Vec<(String, ChannelEvent)>>,
    controls: Mutex<Vec<Control>>,
}

impl BrokerHandler for Recorder {
    fn handle_publication(&self, channel: &ChannelName, publication: Arc<Publication>) {
        self.publications
            .lock()
            .unwrap()
            .push((channel.to_string(), publication));
    }
    fn handle_event(&self, channel: &ChannelName, event: ChannelEvent) {
        self.events
            .lock()
            .unwrap()
            .push((channel.to_string(), event));
    }
    fn handle_control(&self, control: Control) {
        self.controls.lock().unwrap().push(control);
    }
}

fn publication(text: &str) -> Publication {
    Publication {
        offset: 0,
        epoch: None,
        data: Data::Json(Bytes::from(format!("{text:?}"))),
        info: None,
        key: None,
        time_us: now_us(),
    }
}

fn info(client: &str) -> ClientInfo {
    ClientInfo {
        client: client.into(),
        user: "u".into(),
        info: None,
    }
}

/// Waits (bounded) until `f` holds: networked brokers deliver asynchronously.
async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 2 s");
}

/// Runs every check against `broker`, using channel names unique to this run.
pub(crate) async fn run(broker: Arc<dyn Broker>) {
    let recorder = Arc::new(Recorder::default());
    let handler: Arc<dyn BrokerHandler> = recorder.clone();
    broker.register(Arc::downgrade(&handler));
    let run = format!("{:x}", rand::random::<u32>());
    let ch = |name: &str| ChannelName::new(&format!("t{run}:{name}")).unwrap();
    let options = HistoryOptions {
        size: 3,
        ttl: Duration::from_secs(60),
    };
    let history = Some(options);

    // Nothing is delivered before subscribing; offsets count from 1 in one epoch.
    let a = ch("a");
    let p1 = broker.publish(&a, publication("1"), history).await.unwrap();
    assert_eq!(p1.offset, 1);
    let epoch = p1.epoch.clone().unwrap();
    broker.subscribe(&a).await.unwrap();
    for i in 2..=5 {
        let p = broker
            .publish(&a, publication(&i.to_string()), history)
            .await
            .unwrap();
        assert_eq!((p.offset, p.epoch.as_ref()), (i, Some(&epoch)));
    }
    eventually(|| recorder.publications.lock().unwrap().len() == 4).await;
    let offsets: Vec<u64> = recorder
        .publications
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p)| p.offset)
        .collect();
    assert_eq!(
        offsets,
        [2, 3, 4, 5],
        "delivered in order, only after subscribing"
    );

    // History keeps the last 3.
    let h = broker
        .history(&a, HistoryQuery::default(), options)
        .await
        .unwrap();
    assert_eq!(
        h.position,
        StreamPosition {
            offset: 5,
            epoch: epoch.to_string()
        }
    );
    assert_eq!(
        h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    let limited = HistoryQuery {
        since: None,
        limit: Some(2),
    };
    let h = broker.history(&a, limited, options).await.unwrap();
    assert_eq!(
        h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [4, 5]
    );

    // Since a position: contiguous when history reaches back to it.
    let since = |offset| HistoryQuery {
        since: Some(StreamPosition {
            offset,
            epoch: epoch.to_string(),
        }),
        limit: None,
    };
    let h = broker.history(&a, since(3), options).await.unwrap();
    assert!(h.contiguous);
    assert_eq!(
        h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [4, 5]
    );
    let h = broker.history(&a, since(2), options).await.unwrap();
    assert!(h.contiguous, "3, 4, 5 follow 2");
    let h = broker.history(&a, since(1), options).await.unwrap();
    assert!(!h.contiguous, "2 is gone");
    let h = broker.history(&a, since(5), options).await.unwrap();
    assert!(h.contiguous && h.publications.is_empty());
    let h = broker.history(&a, since(9), options).await.unwrap();
    assert!(!h.contiguous, "a position from the future is not ours");
    let wrong = HistoryQuery {
        since: Some(StreamPosition {
            offset: 1,
            epoch: "other".into(),
        }),
        limit: None,
    };
    assert!(matches!(
        broker.history(&a, wrong, options).await,
        Err(BrokerError::EpochMismatch(_))
    ));

    // A channel nobody published to: offset 0, and recovering from that position while
    // nothing was published is complete.
    let fresh = ch("fresh");
    let empty = HistoryQuery {
        since: None,
        limit: Some(0),
    };
    let h = broker.history(&fresh, empty, options).await.unwrap();
    assert_eq!(h.position.offset, 0);
    let again = HistoryQuery {
        since: Some(h.position.clone()),
        limit: None,
    };
    let h2 = broker.history(&fresh, again, options).await.unwrap();
    assert!(h2.contiguous && h2.publications.is_empty());
    assert_eq!(h2.position, h.position);

    // Without history: offset 0, still delivered.
    let b = ch("b");
    broker.subscribe(&b).await.unwrap();
    let p = broker.publish(&b, publication("x"), None).await.unwrap();
    assert_eq!((p.offset, p.epoch.clone()), (0, None));
    eventually(|| {
        recorder
            .publications
            .lock()
            .unwrap()
            .iter()
            .any(|(c, _)| *c == b.to_string())
    })
    .await;

    // Unsubscribed: no more deliveries.
    broker.unsubscribe(&b).await.unwrap();
    broker.publish(&b, publication("y"), None).await.unwrap();
    broker.publish(&a, publication("6"), history).await.unwrap();
    eventually(|| recorder.publications.lock().unwrap().len() == 6).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let last = recorder
        .publications
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .1
        .offset;
    assert_eq!(last, 6);
    assert_eq!(recorder.publications.lock().unwrap().len(), 6);

    // Events and presence.
    broker
        .publish_event(&a, ChannelEvent::Join(info("c1")))
        .await
        .unwrap();
    eventually(|| recorder.events.lock().unwrap().len() == 1).await;
    broker.add_presence(&a, info("c1")).await.unwrap();
    broker.add_presence(&a, info("c2")).await.unwrap();
    let p = broker.presence(&a).await.unwrap();
    assert_eq!(p.len(), 2);
    broker.remove_presence(&a, "c1").await.unwrap();
    let p = broker.presence(&a).await.unwrap();
    assert_eq!(p.keys().collect::<Vec<_>>(), ["c2"]);
    assert!(broker.channels().await.unwrap().contains(&a));

    // Control reaches every node.
    let control = Control::DisconnectUser {
        user: "u".into(),
        code: 4502,
        reason: "bye".into(),
    };
    broker.publish_control(control.clone()).await.unwrap();
    eventually(|| recorder.controls.lock().unwrap().contains(&control)).await;
    broker.unsubscribe(&a).await.unwrap();
}
