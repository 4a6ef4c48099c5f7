//! Driving an `EngineCore` step by step in tests: a CPU core over a fixture model, and a run
//! that adds requests at given steps and collects every output and step log.

use aisle::backend::{DeviceSpec, ExecutorOptions};
use aisle::engine::{EngineCore, Event, GenerationRequest, RequestOutput, ScheduledWork, SchedulerConfig};
use aisle::runtime::LoadedModel;
use candle_core::DType;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

pub const BS: usize = 4;

pub fn core(model: &LoadedModel, num_blocks: usize, budget: usize, max_seqs: usize) -> EngineCore {
    let opts = ExecutorOptions {
        device: DeviceSpec::Cpu,
        dtype: DType::F32,
        block_size: BS,
        num_blocks,
        ..Default::default()
    };
    let sched = SchedulerConfig {
        max_batched_tokens: budget,
        max_seqs,
        step_time_target: None,
        speculation: None,
    };
    EngineCore::new(
        model.executor(&opts).unwrap(),
        model.tokenizer.clone(),
        model.eos_token_ids(),
        sched,
    )
}

struct Client {
    rx: UnboundedReceiver<Event>,
    out: RequestOutput,
    done: bool,
}

impl Client {
    fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            if matches!(e, Event::Done(_)) {
                self.done = true;
            }
            self.out.apply(e).expect("request failed");
        }
    }
}

/// Per step: what each scheduled sequence ran.
pub type StepLog = Vec<Vec<ScheduledWork>>;

/// Drive one core: request i is added before step `arrival_i`; returns each output and every
/// step's (request, choice, start, tokens) list.
pub fn run(core: &mut EngineCore, reqs: &[(usize, GenerationRequest)]) -> (Vec<RequestOutput>, StepLog) {
    let mut clients: Vec<Option<Client>> = reqs.iter().map(|_| None).collect();
    let mut steps = Vec::new();
    for step in 0.. {
        for (i, (arrival, req)) in reqs.iter().enumerate() {
            if *arrival == step {
                let (tx, rx) = unbounded_channel();
                core.add(i as u64, req.clone(), tx);
                clients[i] = Some(Client {
                    rx,
                    out: RequestOutput::default(),
                    done: false,
                });
            }
        }
        if let Some(summary) = core.step() {
            steps.push(summary.seqs);
        }
        clients.iter_mut().flatten().for_each(Client::drain);
        let all_added = reqs.iter().all(|(a, _)| *a <= step);
        if all_added && !core.has_work() {
            break;
        }
        assert!(step < 10_000, "engine did not finish");
    }
    let outs = clients
        .into_iter()
        .map(|c| c.expect("added"))
        .inspect(|c| assert!(c.done))
        .map(|c| c.out)
        .collect();
    (outs, steps)
}
