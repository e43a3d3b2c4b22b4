//! The checks every PhaseResult and SumResult passes before anything of it
//! is used: it must answer the outstanding request (request id, step,
//! phase) and hold exactly the bytes the layout requires; a PhaseResult's
//! maxima must be numbers >= 0 (+inf marks a block with a non-finite
//! value).  A StepResult and a State (whole steps) pass the same kind of
//! checks.  A message that fails is refused with a gRPC status naming the
//! field, the expected and the received value.

use tonic::Status;

use super::proto;
use crate::gan::phases::stat;

/// What the outstanding request lets a result be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub request_id: u64,
    pub step: u64,
    /// `proto::Phase` as sent.
    pub phase: i32,
    /// Blocks of the result's columns (one maximum each).
    pub blocks: usize,
    /// Values of the result's columns (one int64 each in the SumResult).
    pub width: usize,
}

impl Expected {
    /// What the results to `req` must look like, carrying the columns
    /// `cols` (`wire::result_columns`) made of `blocks` blocks.
    pub fn of(req: &proto::PhaseRequest, cols: &[std::ops::Range<usize>], blocks: usize) -> Expected {
        let width = cols.iter().map(|c| c.len()).sum();
        Expected { request_id: req.request_id, step: req.step, phase: req.phase, blocks, width }
    }
}

/// What a valid result says.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The shard's block maxima (or, for a SumResult, its sums are the right size).
    Values,
    /// The worker could not compute the phase (its own words, shortened).
    Failed(String),
}

/// The longest worker-supplied error text passed on to logs.
const MAX_ERROR_CHARS: usize = 500;

/// Checks `res` against the outstanding request; the status of a refusal
/// names the field, the expected and the received value.
pub fn validate_result(res: &proto::PhaseResult, want: &Expected) -> Result<Verdict, Status> {
    let what = format!("PhaseResult for step {} phase {}", want.step, want.phase);
    check_ids(&what, (res.request_id, res.step, res.phase), want)?;
    if !res.error.is_empty() {
        return Ok(failed(&res.error));
    }
    check_len(&what, "maxima hold", res.maxima.len(), want.blocks, 4, "f32")?;
    check_len(&what, "fixed holds", res.fixed.len(), want.width, 8, "int64")?;
    if let Some((i, x)) = crate::f32le::iter(&res.maxima).enumerate().find(|(_, x)| x.is_nan() || *x < 0.0) {
        return Err(Status::invalid_argument(format!(
            "{what}: maxima hold {x} at block {i}; a maximum of |value| is a number >= 0 (+inf for a non-finite value)"
        )));
    }
    if !(res.compute_seconds.is_finite() && res.compute_seconds >= 0.0) {
        return Err(Status::invalid_argument(format!(
            "{what}: compute_seconds is {}, expected a finite number of seconds >= 0",
            res.compute_seconds
        )));
    }
    Ok(Verdict::Values)
}

/// Checks a SumResult against the outstanding SumRequest (same ids as its phase).
pub fn validate_sum(res: &proto::SumResult, want: &Expected) -> Result<Verdict, Status> {
    let what = format!("SumResult for step {} phase {}", want.step, want.phase);
    check_ids(&what, (res.request_id, res.step, res.phase), want)?;
    if !res.error.is_empty() {
        return Ok(failed(&res.error));
    }
    check_len(&what, "fixed holds", res.fixed.len(), want.width, 8, "int64")?;
    Ok(Verdict::Values)
}

fn failed(error: &str) -> Verdict {
    Verdict::Failed(error.chars().take(MAX_ERROR_CHARS).collect())
}

/// The result answers the outstanding request: a stale or future step, an
/// earlier request or another phase is refused.
fn check_ids(what: &str, (request_id, step, phase): (u64, u64, i32), want: &Expected) -> Result<(), Status> {
    if request_id != want.request_id {
        return Err(Status::failed_precondition(format!(
            "{what}: request_id is {request_id}, expected {} (the outstanding request)",
            want.request_id
        )));
    }
    if step != want.step {
        let age = if step < want.step { "stale" } else { "future" };
        return Err(Status::failed_precondition(format!("{what}: step is {step} ({age}), expected {}", want.step)));
    }
    if phase != want.phase {
        return Err(Status::failed_precondition(format!("{what}: phase is {phase}, expected {}", want.phase)));
    }
    Ok(())
}

/// `field` ("maxima hold", "fixed holds") has exactly `n` values of `size` bytes.
fn check_len(what: &str, field: &str, len: usize, n: usize, size: usize, kind: &str) -> Result<(), Status> {
    if len != n * size {
        return Err(Status::invalid_argument(format!(
            "{what}: {field} {len} bytes, expected {} ({n} {kind})",
            n * size
        )));
    }
    Ok(())
}

/// What the outstanding whole-step request lets its StepResult be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepExpected {
    pub request_id: u64,
    pub step: u64,
    /// The request was sent ahead (it may come back discarded).
    pub speculative: bool,
}

/// What a valid StepResult says.
#[derive(Debug, Clone, PartialEq)]
pub enum StepVerdict {
    /// The step ran: its reduced stats (the rest is in the message).
    Ran([f32; stat::COUNT]),
    /// A speculative request whose previous step was not applied: not run.
    Discarded,
    /// The worker could not run the step (its own words, shortened).
    Failed(String),
}

/// Checks a StepResult: it answers the outstanding request, carries the
/// stats, and its figures are finite unless it counts non-finite values
/// (then the step is skipped everywhere).
pub fn validate_step(res: &proto::StepResult, want: &StepExpected) -> Result<StepVerdict, Status> {
    let what = format!("StepResult for step {}", want.step);
    if res.request_id != want.request_id || res.step != want.step {
        return Err(Status::failed_precondition(format!(
            "{what}: request_id {} step {}, expected request_id {} step {} (the outstanding request)",
            res.request_id, res.step, want.request_id, want.step
        )));
    }
    if !res.error.is_empty() {
        return Ok(StepVerdict::Failed(res.error.chars().take(MAX_ERROR_CHARS).collect()));
    }
    if res.discarded {
        return if want.speculative {
            Ok(StepVerdict::Discarded)
        } else {
            Err(Status::invalid_argument(format!("{what}: discarded, but the request was not speculative")))
        };
    }
    let mut stats = [0.0f32; stat::COUNT];
    crate::f32le::decode(&res.stats, &mut stats, "stats")
        .map_err(|m| Status::invalid_argument(format!("{what}: {m} (gan::phases::stat::COUNT = {})", stat::COUNT)))?;
    let times = [res.compute_seconds, res.phase_one_seconds, res.phase_two_seconds, res.optimizer_seconds];
    if let Some(t) = times.iter().find(|t| !(t.is_finite() && **t >= 0.0)) {
        return Err(Status::invalid_argument(format!("{what}: a time of {t} s; expected finite seconds >= 0")));
    }
    let finite = stats.iter().all(|x| x.is_finite()) && res.sq_norm_disc.is_finite() && res.sq_norm_gen.is_finite();
    if res.nonfinite == 0 && !finite {
        return Err(Status::invalid_argument(format!(
            "{what}: non-finite stats or gradient norms with nonfinite = 0; a worker whose values overflow must count them"
        )));
    }
    Ok(StepVerdict::Ran(stats))
}

/// What a State sent back must hold: the parameters and moments of the
/// run's networks and optimizers, at the optimizer steps the coordinator
/// counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateExpected {
    pub request_id: u64,
    pub n_gen: usize,
    pub n_disc: usize,
    /// Floats in each player's moments (0 for SGD).
    pub moments: [usize; 2],
    /// Each player's optimizer steps.
    pub t: [u64; 2],
}

/// The bytes of a State's tensors.
pub fn state_bytes(st: &proto::State) -> usize {
    [&st.generator, &st.discriminator, &st.gen_m, &st.gen_v, &st.disc_m, &st.disc_v].iter().map(|b| b.len()).sum()
}

/// Checks a State sent back: exact sizes, finite values, the expected
/// optimizer steps.  Ok(Err(why)): the worker could not send it.
pub fn validate_state(st: &proto::State, want: &StateExpected) -> Result<Result<(), String>, Status> {
    if st.request_id != want.request_id {
        return Err(Status::failed_precondition(format!(
            "State: request_id is {}, expected {} (the outstanding request)",
            st.request_id, want.request_id
        )));
    }
    if !st.error.is_empty() {
        return Ok(Err(st.error.chars().take(MAX_ERROR_CHARS).collect()));
    }
    let fields = [
        ("generator", &st.generator, want.n_gen),
        ("discriminator", &st.discriminator, want.n_disc),
        ("gen_m", &st.gen_m, want.moments[0]),
        ("gen_v", &st.gen_v, want.moments[0]),
        ("disc_m", &st.disc_m, want.moments[1]),
        ("disc_v", &st.disc_v, want.moments[1]),
    ];
    for (name, bytes, n) in fields {
        if bytes.len() != n * 4 {
            return Err(Status::invalid_argument(format!(
                "State: {name} holds {} bytes, expected {} ({n} f32)",
                bytes.len(),
                n * 4
            )));
        }
        if let Some((i, x)) = crate::f32le::first_non_finite(bytes) {
            return Err(Status::invalid_argument(format!("State: {name} holds {x} at float {i}")));
        }
    }
    if [st.gen_t, st.disc_t] != want.t {
        return Err(Status::failed_precondition(format!(
            "State: optimizer steps {} and {}, expected {} and {} (the steps the coordinator counted)",
            st.gen_t, st.disc_t, want.t[0], want.t[1]
        )));
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Expected {
        Expected { request_id: 7, step: 12, phase: 1, blocks: 3, width: 10 }
    }

    fn good() -> proto::PhaseResult {
        proto::PhaseResult {
            request_id: 7,
            step: 12,
            phase: 1,
            maxima: crate::f32le::encode(&[1.0, 0.0, 3.0]),
            fixed: vec![0; 80],
            compute_seconds: 0.5,
            ..Default::default()
        }
    }

    /// The refusal of `res`: its code and message.
    fn refusal(res: proto::PhaseResult) -> (tonic::Code, String) {
        let s = validate_result(&res, &want()).expect_err("refused");
        (s.code(), s.message().to_string())
    }

    #[test]
    fn a_fitting_result_passes() {
        assert_eq!(validate_result(&good(), &want()).unwrap(), Verdict::Values);
        // +inf marks a block with a non-finite value: the step is skipped, the result is not refused.
        let inf = proto::PhaseResult { maxima: crate::f32le::encode(&[1.0, f32::INFINITY, 3.0]), ..good() };
        assert_eq!(validate_result(&inf, &want()).unwrap(), Verdict::Values);
    }

    #[test]
    fn ids_must_match_the_outstanding_request() {
        use tonic::Code::FailedPrecondition;
        let (c, m) = refusal(proto::PhaseResult { request_id: 6, ..good() });
        assert_eq!(
            (c, m.as_str()),
            (
                FailedPrecondition,
                "PhaseResult for step 12 phase 1: request_id is 6, expected 7 (the outstanding request)"
            )
        );
        let (c, m) = refusal(proto::PhaseResult { step: 11, ..good() });
        assert_eq!(
            (c, m.as_str()),
            (FailedPrecondition, "PhaseResult for step 12 phase 1: step is 11 (stale), expected 12")
        );
        let (c, m) = refusal(proto::PhaseResult { step: 13, ..good() });
        assert_eq!(
            (c, m.as_str()),
            (FailedPrecondition, "PhaseResult for step 12 phase 1: step is 13 (future), expected 12")
        );
        let (c, m) = refusal(proto::PhaseResult { phase: 2, ..good() });
        assert_eq!((c, m.as_str()), (FailedPrecondition, "PhaseResult for step 12 phase 1: phase is 2, expected 1"));
    }

    #[test]
    fn maxima_must_be_one_number_per_block() {
        use tonic::Code::InvalidArgument;
        let mut short = good();
        short.maxima.truncate(8);
        let (c, m) = refusal(short);
        assert_eq!(c, InvalidArgument);
        assert_eq!(m, "PhaseResult for step 12 phase 1: maxima hold 8 bytes, expected 12 (3 f32)");
        let (_, m) = refusal(proto::PhaseResult { fixed: vec![0; 8], ..good() });
        assert_eq!(m, "PhaseResult for step 12 phase 1: fixed holds 8 bytes, expected 80 (10 int64)");
        for bad in [f32::NAN, -1.0, f32::NEG_INFINITY] {
            let res = proto::PhaseResult { maxima: crate::f32le::encode(&[1.0, 2.0, bad]), ..good() };
            let (c, m) = refusal(res);
            assert_eq!(c, InvalidArgument);
            assert!(m.contains(&format!("maxima hold {bad} at block 2")), "{m}");
        }
        let inf = proto::PhaseResult { compute_seconds: f64::INFINITY, ..good() };
        assert!(refusal(inf).1.contains("compute_seconds is inf"));
    }

    #[test]
    fn a_sum_must_answer_its_request_with_one_int64_per_value() {
        let sum = proto::SumResult { request_id: 7, step: 12, phase: 1, fixed: vec![0; 80], ..Default::default() };
        assert_eq!(validate_sum(&sum, &want()).unwrap(), Verdict::Values);
        let m = validate_sum(&proto::SumResult { fixed: vec![0; 79], ..sum.clone() }, &want()).unwrap_err();
        assert_eq!(m.message(), "SumResult for step 12 phase 1: fixed holds 79 bytes, expected 80 (10 int64)");
        let m = validate_sum(&proto::SumResult { step: 11, ..sum.clone() }, &want()).unwrap_err();
        assert_eq!(m.code(), tonic::Code::FailedPrecondition);
        let failed = proto::SumResult { error: "no rows".into(), fixed: Vec::new(), ..sum };
        assert_eq!(validate_sum(&failed, &want()).unwrap(), Verdict::Failed("no rows".into()));
    }

    #[test]
    fn a_worker_error_is_passed_on_shortened() {
        let res = proto::PhaseResult { error: "x".repeat(10_000), maxima: Vec::new(), ..good() };
        match validate_result(&res, &want()).unwrap() {
            Verdict::Failed(m) => assert_eq!(m.len(), MAX_ERROR_CHARS),
            v => panic!("{v:?}"),
        }
        // Even a failure must answer the outstanding request.
        assert!(validate_result(&proto::PhaseResult { step: 3, ..res }, &want()).is_err());
    }

    fn state(want: &StateExpected) -> proto::State {
        let f = |n: usize| crate::f32le::encode(&vec![0.5; n]);
        proto::State {
            request_id: want.request_id,
            generator: f(want.n_gen),
            discriminator: f(want.n_disc),
            gen_m: f(want.moments[0]),
            gen_v: f(want.moments[0]),
            disc_m: f(want.moments[1]),
            disc_v: f(want.moments[1]),
            gen_t: want.t[0],
            disc_t: want.t[1],
            error: String::new(),
        }
    }

    #[test]
    fn a_state_sent_back_must_fit_the_run() {
        let want = StateExpected { request_id: 9, n_gen: 5, n_disc: 3, moments: [5, 3], t: [40, 40] };
        assert_eq!(validate_state(&state(&want), &want).unwrap(), Ok(()));
        let sgd = StateExpected { moments: [0, 0], ..want };
        assert_eq!(validate_state(&state(&sgd), &sgd).unwrap(), Ok(()));
        let refused = |f: fn(&mut proto::State)| {
            let mut st = state(&want);
            f(&mut st);
            let s = validate_state(&st, &want).expect_err("refused");
            (s.code(), s.message().to_string())
        };
        let (c, m) = refused(|s| s.request_id = 8);
        assert_eq!(
            (c, m.as_str()),
            (tonic::Code::FailedPrecondition, "State: request_id is 8, expected 9 (the outstanding request)")
        );
        let (c, m) = refused(|s| s.disc_v.truncate(8));
        assert_eq!((c, m.as_str()), (tonic::Code::InvalidArgument, "State: disc_v holds 8 bytes, expected 12 (3 f32)"));
        let (_, m) = refused(|s| s.gen_m[4..8].copy_from_slice(&f32::NAN.to_le_bytes()));
        assert_eq!(m, "State: gen_m holds NaN at float 1");
        let (c, m) = refused(|s| s.disc_t = 41);
        assert_eq!(c, tonic::Code::FailedPrecondition);
        assert!(m.contains("optimizer steps 40 and 41, expected 40 and 40"), "{m}");
        // A worker that could not send it says why (ids still checked).
        let failed = proto::State { error: "device lost".into(), ..state(&want) };
        assert_eq!(validate_state(&failed, &want).unwrap(), Err("device lost".to_string()));
    }

    #[test]
    fn a_step_result_must_answer_the_request_and_count_what_overflowed() {
        let want = StepExpected { request_id: 3, step: 7, speculative: false };
        let good = proto::StepResult {
            request_id: 3,
            step: 7,
            stats: crate::f32le::encode(&[0.25; stat::COUNT]),
            sq_norm_disc: 1.0,
            sq_norm_gen: 2.0,
            compute_seconds: 0.01,
            ..Default::default()
        };
        assert_eq!(validate_step(&good, &want).unwrap(), StepVerdict::Ran([0.25; stat::COUNT]));
        let code = |r: proto::StepResult| validate_step(&r, &want).expect_err("refused").code();
        assert_eq!(code(proto::StepResult { step: 6, ..good.clone() }), tonic::Code::FailedPrecondition);
        assert_eq!(code(proto::StepResult { request_id: 2, ..good.clone() }), tonic::Code::FailedPrecondition);
        assert_eq!(code(proto::StepResult { stats: vec![0; 4], ..good.clone() }), tonic::Code::InvalidArgument);
        assert_eq!(code(proto::StepResult { phase_two_seconds: -1.0, ..good.clone() }), tonic::Code::InvalidArgument);
        let nan = proto::StepResult { sq_norm_gen: f64::NAN, ..good.clone() };
        assert_eq!(code(nan.clone()), tonic::Code::InvalidArgument);
        // Counted, the same values skip the step instead.
        assert!(matches!(
            validate_step(&proto::StepResult { nonfinite: 1, ..nan }, &want).unwrap(),
            StepVerdict::Ran(_)
        ));
        let failed = proto::StepResult { error: "e".repeat(1000), ..good.clone() };
        match validate_step(&failed, &want).unwrap() {
            StepVerdict::Failed(m) => assert_eq!(m.len(), MAX_ERROR_CHARS),
            v => panic!("{v:?}"),
        }
        // Only a request sent ahead may come back discarded.
        let discarded = proto::StepResult { discarded: true, stats: Vec::new(), ..good };
        assert_eq!(code(discarded.clone()), tonic::Code::InvalidArgument);
        let ahead = StepExpected { speculative: true, ..want };
        assert_eq!(validate_step(&discarded, &ahead).unwrap(), StepVerdict::Discarded);
    }
}
