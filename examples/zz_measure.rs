use lifecycle::prelude::*;
use lifecycle::Phase;
use std::time::{Duration, Instant};

struct Nop;
#[async_trait]
impl Component for Nop {
    fn name(&self) -> &str {
        "nop"
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
}

fn measure(tokio: bool, health_wait: bool) {
    let mut samples = vec![];
    for _ in 0..40 {
        let app = App::builder()
            .add(Nop)
            .config(Config::default().drain_delay(Duration::from_millis(1)))
            .build()
            .unwrap();
        let monitor = app.health();
        let handle = app.handle();
        let th = std::thread::spawn(move || {
            if tokio {
                app.run_tokio().unwrap()
            } else {
                app.run_smol().unwrap()
            }
        });
        while monitor.phase() != Phase::Running {
            std::thread::yield_now();
        }
        if health_wait {
            std::thread::sleep(Duration::from_millis(20));
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = Instant::now();
        handle.shutdown();
        while monitor.phase() == Phase::Running {
            std::hint::spin_loop();
        }
        samples.push(t.elapsed());
        th.join().unwrap();
    }
    samples.sort();
    println!(
        "tokio={tokio} wait={health_wait}: median {:?}, p90 {:?}, max {:?}",
        samples[20], samples[36], samples[39]
    );
}
fn main() {
    measure(false, false);
    measure(false, true);
    measure(true, false);
    measure(true, true);
}
