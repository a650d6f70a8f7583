"""The answers in words: every question of Sec. 3.3 and 4.3 and the bonus, quoted
(:data:`QUESTIONS`) and answered from a run's measured numbers (``results.json``).

Each ``answer_*`` function takes the results dictionary and returns the paragraphs of
one answer. The reasons (change of variables, Jacobians, what the velocity field
learns, Euler's error, the exact coupling inverse) are the exercise's mathematics; every
statement that depends on a measurement is generated from it, so another seed, backend
or a quick run gets text that says what *its* numbers show (if the points inside the logo
came out less likely, the answer would say so). :data:`ANSWERS` maps each question's
label to its function.
"""
from __future__ import annotations

import math

import numpy as np

from examples.common.report import fmt
from examples.rings_exercise.bonus import schedule_name
from examples.rings_exercise.settings import Q5_INSIDE, Q5_POINTS_LOGO
from flows_np.data import RING_COLORS

__all__ = ["QUESTIONS", "ANSWERS", "quick_note", "gaussian_entropy"]

#: The questions as the exercise words them (seeds/001, Sec. 3.3 and 4.3), by label.
QUESTIONS = {
    "NF Q1": "Loss. Present the validation loss over the training epochs. Additionally, plot the log-determinant "
             "and the log(p_z(x)) components of this loss in separate lines at the same figure.",
    "NF Q2": "Sampling. Present a 3 figures with different samplings of 1000 points, using 3 different seeds.",
    "NF Q3": "Sampling over time. Your Normalizing flow model should keep the dimension of the input at all times. "
             "Sample 1000 points out of it, and plot them after each layer of the model (in separate figures) "
             "showing how the distribution progresses. Please plot up to 6 figures, if your model has more than 5 "
             "layers, choose a layer at every 1/5 of the way from your model.",
    "NF Q4": "Sampling trajectories. Sample 10 points from your model and present the forward process of them "
             "layer by layer, as a trajectory in a 2D space. Color the points according to their time t.",
    "NF Q5": "Probability estimation. For 5 points of your choice, present the inverse process layer by layer, as a "
             "trajectory in a 2D space. Choose 3 points from inside the olympic logo and 2 outside of it. Color the "
             "points according to their time t. Compute the log(p(x)) of each point. Are the points inside the "
             "Olympic logo more or less likely from outside of it? Why? Explain.",
    "FM Q1": "Loss. Present the loss function (Eq. 16) over the training batches.",
    "FM Q2": "Flow Progression. Your flow matching model should keep the dimension of the input at all times. Sample "
             "1000 points out of it, and plot them after each of t = 0, 0.2, 0.4, 0.6, 0.8, 1 in separate figures, "
             "showing how the distribution progresses. Compare this to Q3 of Sec. 3.3, in which aspects is the "
             "distribution flow different between the models? Explain.",
    "FM Q3": "Point Trajectory. Sample 10 points of your choice from your model and present the their forward "
             "process as a 2D trajectory. Color the points according to their time t. Compare this to Q4 of Sec. "
             "3.3. Which models flow is more consistent over time? Explain (you may answer this and the previous "
             "question together).",
    "FM Q4": "Time Quantization. Sample 1000 points from the models using dt = 0.002, 0.02, 0.05, 0.1, 0.2. Plot "
             "the results in separate figures. How does this quantization of the flow affect the resulted "
             "distribution? Explain.",
    "FM Q5": "Reversing the Flow. Pick the same 5 points from Q5 of Sec. 3.3. Insert them to the reverse sampling "
             "process of your flow matching model, and plot their trajectories in a 2D space. Compare this to Q5 of "
             "Sec. 3.3. Are the outputs the same? Explain why. Re-enter the inverted points back into the forward "
             "model. Did you get the same points? Explain why / why not. Say you would re-enter the normalizing "
             "flow inversion back to the normalizing flow. Would you then get the same points back? Explain.",
    "Conditional Q1": "Plotting the Input. Plot your input coloring the points by their classes. Which equation did "
                      "you change to insert the conditioning?",
    "Conditional Q2": "A Point from each Class. Sample 1 point from each class. Plot the trajectory of the points, "
                      "coloring each trajectory with its class's color. Validate the points reach their class "
                      "region.",
    "Conditional Q3": "Sampling. Plot a sampling of at least 3000 points from your trained conditional model. Plot "
                      "the sampled points coloring them by their classes.",
    "Bonus": "Make one of your flow matching models (conditional or unconditional), output the point (4, 5) which "
             "is far away from the rings, as its sampled output. How did you do it? Describe your attempts "
             "including unsuccessful ones. Trivial solutions will receive less points than more clever ones (keep "
             "in mind clever doesn't necessarily mean complicated). Plot the trajectory of the sampled point over "
             "time.",
}


def gaussian_entropy(dim: int = 2) -> float:
    """Entropy of N(0, I) in ``dim`` dimensions, ``dim/2 log(2 pi e)`` nats."""
    return 0.5 * dim * math.log(2 * math.pi * math.e)


def _f(v, digits: int = 3) -> str:
    return fmt(v, digits)


def _spline(r: dict) -> bool:
    """Whether the run's normalizing flow has spline couplings (``--preset quality``)."""
    return r["settings"].get("nf_kind", "affine") == "spline"


def _couplings(r: dict) -> int:
    return int(r["settings"]["nf_couplings"])


def _pct(v) -> str:
    return f"{100 * v:.1f}%"


def _pts(i) -> str:
    return f"({Q5_POINTS_LOGO[i][0]:g}, {Q5_POINTS_LOGO[i][1]:g})"


def _list(values, digits: int = 3) -> str:
    return ", ".join(_f(v, digits) for v in values)


def _change(a: float, b: float) -> str:
    """``"fell from a to b"`` / ``"rose from a to b"`` / ``"stayed at a"``."""
    if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
        return f"stayed at {_f(a)}"
    digits = next((d for d in (3, 4, 5, 6) if fmt(a, d) != fmt(b, d)), 7)  # enough digits to tell them apart
    return f"{'fell' if b < a else 'rose'} from {fmt(a, digits)} to {fmt(b, digits)}"


def quick_note(r: dict) -> str:
    """A sentence for undertrained (quick) runs, with the numbers; "" for the exercise's settings."""
    if not r["quick"]:
        return ""
    lik, s = r["likelihood"], r["settings"]
    return (f"This is a quick smoke run ({s['points']:,} points, {s['epochs']} epochs): its models are undertrained "
            f"(held-out KL gap NF {_f(lik['nf']['kl_gap'])}, FM {_f(lik['fm']['kl_gap'])} nats; FM samples on a "
            f"ring {_pct(r['fm']['samples_on_ring'])}), and the answers describe these models, not trained ones.")


# --------------------------------------------------------------------------- normalizing flow
def answer_nf_q1(r: dict) -> list:
    val, lik = r["nf"]["val_by_epoch"], r["likelihood"]["nf"]
    nll, lpz, ld = val["nll"], val["log_pz"], val["log_det"]
    h_gauss = gaussian_entropy()
    near = abs(-lpz[-1] - h_gauss) < 0.1
    return [
        f"Over {len(nll)} epochs the validation loss (Eq. 9) {_change(nll[0], nll[-1])} nats per point; "
        f"log p_z(phi^-1(x)) {_change(lpz[0], lpz[-1])} and log|det d phi^-1/dx| {_change(ld[0], ld[-1])} "
        "(the loss is -(log p_z + log det)).",
        "The two terms pull against each other. log p_z alone would be maximised by sending every point to z = 0; "
        "the log-determinant measures how much phi^-1 stretches area around x, and a collapse would drive it to "
        "-inf. If the inverted data were exactly N(0, I), -log p_z would average its entropy log(2 pi e) = "
        f"{_f(h_gauss)}; it ends at {_f(-lpz[-1])}, "
        + ("close to that value: the inverted data are nearly standard normal, and what is left of the loss is "
           "paid in the log-det term" if near else "away from that value: the inverted data are not yet standard "
           "normal") + f". log det = {_f(ld[-1])} means phi^-1 "
        f"{'expands' if ld[-1] > 0 else 'contracts'} areas on the data by e^{_f(ld[-1])} = {_f(math.exp(ld[-1]))} on "
        "average, which is how the flow concentrates the Gaussian's mass on the thin rings. The data's own "
        f"entropy is {_f(lik['entropy'])} nats, so the held-out NLL {_f(lik['nll'])} leaves a KL gap of "
        f"{_f(lik['kl_gap'])} nats.",
    ]


def answer_nf_q2(r: dict) -> list:
    shares = r["nf"]["q2_on_ring"]
    vals = list(shares.values())
    noise = r["nf"]["q3_stages"][0]["on_ring"]
    return [
        "Seeds " + ", ".join(f"{k}: {_pct(v)}" for k, v in shares.items()) + " of the samples on a ring (spread "
        f"{100 * (max(vals) - min(vals)):.1f} points). A seed changes which noise is drawn, not the model, so the "
        "three panels show the same distribution up to sampling noise. For scale: every training point is on a "
        f"ring, and pure N(0, I) noise has {_pct(noise)} on one (the rings cover that share of its mass).",
        "The samples off the rings sit on thin bridges between rings and inside the holes. The flow is a "
        "continuous bijection of the plane: it can squeeze mass but cannot tear the connected Gaussian into five "
        "separate annuli or leave a hole exactly empty, so some mass always stays in between.",
    ]


def answer_nf_q3(r: dict) -> list:
    stages = r["nf"]["q3_stages"]
    on = [st["on_ring"] for st in stages]
    jumps = np.diff(on)
    k = int(np.argmax(np.abs(jumps)))
    rms = [st["rms"] for st in stages]
    ends = (min(rms[0], rms[-1]), max(rms[0], rms[-1]))
    beyond = max(rms[1:-1], default=rms[-1]) > 1.05 * ends[1] or min(rms[1:-1], default=rms[0]) < 0.95 * ends[0]
    return [
        "After " + ", ".join(str(st["couplings"]) for st in stages) + " couplings the share on a ring is "
        + ", ".join(_pct(v) for v in on) + " and the RMS radius " + _list(rms) + f". The largest change in the "
        f"on-ring share comes between {stages[k]['couplings']} and {stages[k + 1]['couplings']} couplings "
        f"({100 * jumps[k]:+.1f} points).",
        "Each coupling moves one coordinate only, "
        + ("by a monotone rational-quadratic spline whose knots are computed from the other"
           if _spline(r) else "by a scale and a shift computed from the other (Eq. 3)")
        + ", and the permutation then swaps their roles, so the distribution is reshaped by axis-aligned "
        + ("monotone warps" if _spline(r) else "shears") + ", one axis at a time. Nothing asks the intermediate clouds to look like the data or the noise: "
        + ("their RMS radius leaves the range between the noise's and the data's" if beyond else
           "here their RMS radius stays between the noise's and the data's")
        + ", and only the composition of all the layers has to map N(0, I) to the rings.",
    ]


def answer_nf_q4(r: dict) -> list:
    p = r["nf"]["q4_paths"]
    return [
        f"The 10 paths are {_f(p['length_ratio'])} times as long as the straight line from start to end (median), "
        f"and the coefficient of variation of their {_couplings(r)} step lengths is {_f(p['step_cv'])}: "
        + ("the steps are very uneven" if p["step_cv"] > 0.5 else "the steps are fairly even")
        + ". Seen in the data's axis order, every coupling moves a point parallel to one axis, alternately "
        "horizontal and vertical, by however much that layer's " + ("spline" if _spline(r) else "scale and shift")
        + " says: the paths are staircases "
        "rather than smooth curves, and the layer index is a label, not a time.",
    ]


def answer_nf_q5(r: dict) -> list:
    q5 = r["nf"]["q5"]
    lp = np.asarray(q5["log_p"], dtype=np.float64)
    z = np.asarray(q5["latent_norm"], dtype=np.float64)
    log_det = lp + math.log(2 * math.pi) + 0.5 * z ** 2  # log p = log N(z) + log det (Eq. 2)
    inside, outside = np.flatnonzero(Q5_INSIDE), np.flatnonzero(~Q5_INSIDE)
    more = lp[inside].mean() > lp[outside].mean()
    every = lp[inside].min() > lp[outside].max()
    data = r["likelihood"]["data_log_p_q5"]
    rows = "; ".join(f"{_pts(i)} {'on a ring' if Q5_INSIDE[i] else 'off the rings'}: log p = {_f(lp[i])}, "
                     f"|phi^-1(x)| = {_f(z[i])}, log det = {_f(log_det[i])}" for i in range(len(lp)))
    text = [
        f"{rows}. The points inside the logo are {'more' if more else 'less'} likely than those outside (mean "
        f"log p {_f(lp[inside].mean())} against {_f(lp[outside].mean())})"
        + ("; every inside point beats every outside point." if every else
           "; but not every inside point beats every outside point.")
        + f" The true density is log p = {_f(data[int(inside[0])])} on the rings and -inf off them.",
        "Why: by the change of variables (Eq. 2), log p(x) = log N(phi^-1(x); 0, I) + log|det d phi^-1/dx|. "
        "Training maximised it on ring points only, so the flow learnt to send ring points into the bulk of the "
        "Gaussian with a Jacobian that packs its mass onto the thin rings. A density integrates to 1: mass put on "
        "the rings is taken from everywhere else, so off-ring points are sent to the Gaussian's tails (large "
        "|phi^-1(x)|) or into regions the inverse does not expand (small log det), both of which lower log p."
        + _nf_q5_terms(z, log_det, inside, outside),
    ]
    hole = [i for i in outside if lp[i] > lp[inside].min()]
    if hole:
        text.append("Exception: " + ", ".join(_pts(i) for i in hole) + " scores above some point on a ring. A "
                    "continuous bijection cannot empty a region enclosed by ring mass (or between close rings), "
                    "so such a point keeps a density of the order of its neighbours'.")
    return text


def _nf_q5_terms(z: np.ndarray, log_det: np.ndarray, inside: np.ndarray, outside: np.ndarray) -> str:
    """Which term of Eq. 2 makes each off-ring point less likely than the on-ring points, measured."""
    parts = []
    for i in outside:
        reasons = []
        if z[i] > z[inside].max():
            reasons.append(f"is sent further out (|phi^-1(x)| = {_f(z[i])}, on-ring points: at most {_f(z[inside].max())})")
        if log_det[i] < log_det[inside].min():
            reasons.append(f"gets a smaller log det ({_f(log_det[i])}, on-ring points: at least "
                           f"{_f(log_det[inside].min())})")
        if reasons:
            parts.append(f"{_pts(i)} " + " and ".join(reasons))
    return (" Here " + "; ".join(parts) + ".") if parts else ""


# --------------------------------------------------------------------------- flow matching
def answer_fm_q1(r: dict) -> list:
    fm = r["fm"]
    lower = fm["cfm_final_train_loss"] < fm["final_train_loss"]
    return [
        f"Mean loss per epoch: unconditional {_change(fm['epoch_loss'][0], fm['epoch_loss'][-1])}, conditional "
        f"{_change(fm['cfm_epoch_loss'][0], fm['cfm_epoch_loss'][-1])} (validation: {_f(fm['final_val_loss'])} and "
        f"{_f(fm['cfm_final_val_loss'])}).",
        "The loss does not approach 0, and is not meant to: Eq. 16 regresses on x_1 - x_0, and many pairs "
        "(x_0, x_1) pass through the same (x_t, t); the best a model can do is their mean E[x_1 - x_0 | x_t], "
        "the marginal velocity, and the pairs' spread around it is a floor. The conditional model's loss is "
        + ("lower: knowing the ring narrows the pairs that can pass through a point."
           if lower else "not lower here, although knowing the ring narrows the pairs that can pass through a point."),
    ] + _floor_lines(fm)


def _floor_lines(fm: dict) -> list:
    """The floors of FM Q1 computed exactly (flows_np.oracle), and how far above them each model ends."""
    floor = fm.get("loss_floor")
    if floor is None:
        return ["With the minibatch-OT coupling the pairs are not independent and the floor is lower; "
                "it is not computed here."]
    ends = {"fm": fm["final_val_loss"] if fm["final_val_loss"] is not None else fm["final_train_loss"],
            "cfm": fm["cfm_final_val_loss"] if fm["cfm_final_val_loss"] is not None else fm["cfm_final_train_loss"]}
    return [f"That floor, from the closed-form marginal field of the rings (flows_np.oracle, the rings as a "
            f"quadrature mixture; a Monte Carlo mean over {floor['points']} fresh pairs): E_t E tr Var(x_1 - x_0 | "
            f"x_t) = {_f(floor['fm'][0])} +- {_f(floor['fm'][1])} for the unconditional model and "
            f"{_f(floor['cfm'][0])} +- {_f(floor['cfm'][1])} given the ring (the dashed lines). The models end "
            f"{_f(ends['fm'] - floor['fm'][0])} and {_f(ends['cfm'] - floor['cfm'][0])} above them (final "
            "validation loss minus floor, each uncertain by the validation loss's noise and the floor's +-): in "
            "expectation that excess is the mean squared error of the learned field against the exact one, the "
            "only part of the loss training can remove."]


def answer_fm_q2(r: dict) -> list:
    fm, nf = r["fm"]["q2_stages"], r["nf"]["q3_stages"]
    fm_rms, nf_rms = [st["rms"] for st in fm], [st["rms"] for st in nf]
    return [
        "At t = " + ", ".join(f"{st['t']:g}" for st in fm) + " the share on a ring is "
        + ", ".join(_pct(st["on_ring"]) for st in fm) + " and the RMS radius " + _list(fm_rms) + ".",
        "Compared with NF Q3: (1) the FM's state at time t is, by construction (Eq. 14), distributed as "
        "(1 - t) x_0 + t x_1, a gradual blend of noise and data, so every snapshot is a meaningful in-between "
        "distribution that sharpens steadily into the rings; the NF's state after k couplings is whatever helps "
        "the final composition. (2) The FM moves both coordinates at every step along one learnt velocity field "
        "v(x, t); an NF coupling moves one coordinate as a function of the other. (3) Blending two independent "
        f"clouds shrinks them in the middle ((1 - t)^2 + t^2 < 1): the FM's RMS radius ranges over "
        f"[{_f(min(fm_rms))}, {_f(max(fm_rms))}], the NF's over [{_f(min(nf_rms))}, {_f(max(nf_rms))}].",
    ]


def answer_fm_q3(r: dict) -> list:
    fm, nf = r["fm"]["q3_paths"], r["nf"]["q4_paths"]
    straighter = fm["length_ratio"] < nf["length_ratio"]
    evener = fm["step_cv"] < nf["step_cv"]
    if straighter and evener:
        verdict = "The flow-matching model's flow is the more consistent over time: straighter paths and more even steps."
    elif not straighter and not evener:
        verdict = "In this run the normalizing flow's paths are the more consistent: straighter and more even."
    else:
        verdict = ("The measures disagree in this run: the " + ("FM" if straighter else "NF") + "'s paths are "
                   "straighter, the " + ("FM" if evener else "NF") + "'s steps more even.")
    return [
        f"Seen at {_couplings(r) + 1} times ({_couplings(r)} intervals, as many as the NF's couplings), the FM's 10 paths are {_f(fm['length_ratio'])} "
        f"times as long as their chords and their step lengths vary by a coefficient of {_f(fm['step_cv'])}; the "
        f"NF's (Q4): {_f(nf['length_ratio'])} and {_f(nf['step_cv'])}. " + verdict,
        "Why: the FM's paths solve one ODE whose velocity v(x, t) is a single smooth network of (x, t), trained "
        "to match the constant-speed straight conditional paths of Eq. 14-15, so a point moves continuously with "
        "slowly changing speed and direction; the paths bend only where the averaged field turns (where "
        "straight paths toward different rings cross). The NF's layers are separate functions without a notion "
        "of time, each free to move a point any distance along one axis.",
    ]


def answer_fm_q4(r: dict) -> list:
    fm = r["fm"]
    dts = list(fm["q4_on_ring_by_dt"])
    share = fm["q4_on_ring_by_dt"]
    shift, rms = fm["q4_shift_from_finest"], fm["q4_rms_by_dt"]
    drop = share[dts[0]] - share[dts[-1]]
    effect = (f"coarser steps lose {100 * drop:.1f} points of samples on a ring" if drop > 0.02 else
              "the share on a ring barely changes" if abs(drop) <= 0.02 else
              f"the share on a ring even rises by {100 * -drop:.1f} points")
    return [
        "On a ring by dt: " + ", ".join(f"{d}: {_pct(share[d])}" for d in dts) + f"; from {dts[0]} to {dts[-1]} "
        f"{effect}. The same noise lands on average " + ", ".join(f"{_f(shift[d])} (dt = {d})" for d in dts[1:])
        + f" away from where the finest steps put it, and the samples' RMS radius goes from {_f(rms[dts[0]])} to "
        f"{_f(rms[dts[-1]])}.",
        "Why: Euler (Eq. 17) follows the velocity at the start of each step for the whole step. Its error is "
        "O(dt^2) per step and O(dt) over the run, which is the growth of the distance to the finest run. The learnt "
        "marginal paths are curved (v averages many straight conditional paths and turns where they cross), so "
        "big steps cut corners: the rings thicken and blur, and points land between rings and in the holes. "
        "Paths that were exactly straight would make even one Euler step exact.",
    ]


def answer_fm_q5(r: dict) -> list:
    fm, nf = r["fm"]["q5"], r["nf"]["q5"]
    gap = np.asarray(fm["distance_to_nf_latent"], dtype=np.float64)
    close = gap < 0.1
    fm_err, nf_err = max(fm["round_trip_error"]), max(nf["round_trip_error"])
    worst = int(np.argmax(nf["round_trip_error"]))
    same = ("They are close for " + ", ".join(_pts(i) for i in np.flatnonzero(close)) + " and differ for the rest"
            if close.any() and not close.all() else "They are all close" if close.all() else "No")
    exact_fm = fm_err < 1e-5
    return [
        f"Are the outputs the same? {same}: the FM's noise and the NF's latent are {_list(gap)} apart "
        "(model coordinates). Both models push the data to N(0, I), but such a map is far from unique (any "
        "rotation of the latent space keeps N(0, I)); each model picks one by its training, the NF by maximum "
        "likelihood through axis-wise couplings, the FM as the flow of the averaged straight-line velocity field. "
        "Agreement would be a coincidence"
        + ("; here the points on the rings, where the data pin both maps, come closer than those off them, "
           "where neither model was trained." if gap[Q5_INSIDE].max() < gap[~Q5_INSIDE].min() else "."),
        f"Re-entering the FM's inverted points: {'yes' if exact_fm else 'almost'}, they come back within "
        f"{_list(fm['round_trip_error'])} (max {_f(fm_err)}). The exact ODE flow is invertible, but Euler backwards "
        "(Eq. 18) takes the velocity at the later time and Euler forwards (Eq. 17) at the earlier one, so each "
        "step leaves an O(dt^2) mismatch, O(dt) in all; a more accurate solver shrinks it (the bonus's rk4 round "
        f"trip misses by {_f(r['bonus']['landing_error'])}).",
        f"The normalizing flow: {'yes' if nf_err < 1e-3 else 'only approximately'}, within {_f(nf_err)} (largest "
        f"for {_pts(worst)}, whose latent has norm {_f(nf['latent_norm'][worst])}). The coupling's inverse (Eq. 4) is "
        "the exact algebraic inverse of Eq. 3 and a permutation's inverse is exact, so only floating-point rounding "
        "remains, and it grows with the size of the numbers involved.",
    ]


# --------------------------------------------------------------------------- conditional
def answer_cfm_q1(r: dict) -> list:
    return [
        "Eq. 16 (with Alg. 1 and 2): the velocity field takes the class c of the data point, v_t(y_t, c), so the loss "
        "is E||v_t(y_t, c) - (y_1 - y_0)||^2 with c the ring of y_1, and sampling (Eq. 17) steps with v_t(y_t, c) "
        "for the class asked for. The class enters through an embedding (a learnt vector per ring) concatenated "
        "with (y_t, t) and mixed by the first Linear layer; the path (Eq. 14) and its target y_1 - y_0 are "
        "unchanged.",
    ]


def answer_cfm_q2(r: dict) -> list:
    landed = r["cfm"]["q2_landed"]
    missed = [RING_COLORS[k] for k, ok in enumerate(landed) if not ok]
    rates = ", ".join(f"{c} {_pct(v)}" for c, v in zip(RING_COLORS, r["cfm"]["q3_on_own_ring_by_class"]))
    head = ("All five points reach their own ring" if not missed else
            f"{sum(landed)} of 5 points reach their own ring; missed: {', '.join(missed)}")
    return [
        f"{head}. A point counts as reaching its class region when it lies on its own annulus (radius 1 +- 0.125 "
        f"in logo coordinates). One draw per class is a small test, so Q3 repeats it at scale: {rates} of the "
        "samples of each class land on their own ring.",
    ]


def answer_cfm_q3(r: dict) -> list:
    cfm, fm = r["cfm"], r["fm"]
    by_class = cfm["q3_on_own_ring_by_class"]
    weakest = int(np.argmin(by_class))
    better = cfm["q3_on_any_ring"] > fm["samples_on_ring"]
    return [
        f"{_pct(cfm['q3_on_own_ring'])} of {cfm['q3_samples']:,} samples land on their own ring (weakest: "
        f"{RING_COLORS[weakest]}, {_pct(by_class[weakest])}) and {_pct(cfm['q3_on_any_ring'])} on some ring, "
        f"against {_pct(fm['samples_on_ring'])} for the unconditional model. "
        + ("Conditioning helps: the class tells the field which ring to aim for from t = 0, so it no longer has "
           "to split the noise between rings, which is where the unconditional model leaves bridges."
           if better else "Conditioning does not help in this run, although the class tells the field which ring "
           "to aim for from t = 0."),
    ]


# --------------------------------------------------------------------------- bonus
def answer_bonus(r: dict) -> list:
    bonus = r["bonus"]
    radius = bonus["reached_radius"]
    lp = bonus["log_p_target"]
    log10_p = (math.log(math.pi * radius ** 2) + lp) / math.log(10)  # chance a sample lands within `radius`
    best, guide, sixth = bonus["best_of_n"], bonus["guidance"], bonus["sixth_class"]
    ok = {"best of N": best["best_distance"] <= radius, "backwards integration": bonus["landing_error"] <= radius,
          "sixth class": sixth["median_distance"] <= radius}
    z2 = bonus["noise_norm"] ** 2 / 2
    rows = "; ".join(f"{_sched(g)}: median miss {_f(g['median_distance'])}, {_pct(g['share_reached'])} within "
                     f"{radius:g}, {_f(g['midway_gap'])} from the unguided path at t = 0.5" for g in guide["by_weight"])
    guided_ok = [_sched(g) for g in guide["by_weight"] if g["median_distance"] <= radius]
    worked = [k for k, v in ok.items() if v] + [f"guidance ({', '.join(guided_ok)})"] * bool(guided_ok)
    failed = [k for k, v in ok.items() if not v]
    return [
        f"(4, 5) (model coordinates) is far from every ring: the unconditional model gives it log p = {_f(lp)}, so an "
        f"ordinary sample lands within {radius:g} of it with probability about pi {radius:g}^2 e^({_f(lp)}) = "
        f"10^{log10_p:.1f}. Four attempts, each run and measured ('reached' = within {radius:g}):",
        f"**1. Best of N ordinary samples ({'reached' if ok['best of N'] else 'failed'}).** Of "
        f"{best['n']:,} samples (Euler, {best['steps']} steps) the nearest lands {_f(best['best_distance'])} away "
        f"(median {_f(best['median_distance'])}). At 10^{log10_p:.1f} per draw, no feasible N gets there.",
        f"**2. Backwards integration ({'reached' if ok['backwards integration'] else 'failed'}; changes the "
        f"noise).** The ODE flow is a bijection, so (4, 5) is the output of exactly one noise vector: integrating "
        f"back from it (Eq. 18, rk4, {bonus['steps']} steps) gives z with |z| = {_f(bonus['noise_norm'])}, and "
        f"sampling from z lands {_f(bonus['landing_error'])} from (4, 5) (Euler both ways, dt = 1/"
        f"{bonus['euler_steps']}: {_f(bonus['euler_landing_error'])}). It works, but N(0, I) draws a noise that "
        f"far out with probability e^(-|z|^2/2) = 10^{-z2 / math.log(10):.1f}: the model is unchanged and the "
        "noise is one it never samples. Figure bonus_trajectory.png.",
        f"**3. Endpoint guidance at sampling time ({'reached with ' + ', '.join(guided_ok) if guided_ok else 'failed'}"
        "; ordinary noise, no training).** On the linear path the model's own forecast of where a point lands is "
        "x1_hat = x + (1 - t) v(x, t); each step moves a share w(t) of the forecast's miss onto the target, "
        "v_w = v + w(t) (target - x1_hat) / (1 - t). Over the same "
        f"{guide['n']} noise draws (Euler, {guide['steps']} steps): {rows}. A constant small w shrinks the miss "
        "only like (1 - t)^w, not enough by the last step; w = 1 discards the model (the trivial straight path to "
        "the target); a weight growing as t^4 leaves the trained field in charge early (small gap at t = 0.5) "
        "and lands on the target.",
        f"**4. A sixth class ({'reached' if ok['sixth class'] else 'failed'}: median miss "
        f"{'within' if ok['sixth class'] else 'above'} {radius:g}; changes the model).** "
        f"A copy of the conditional model gets a sixth embedding row and a fine-tune of {sixth['epochs']} epochs "
        f"(Alg. 1) on {sixth['points']:,} points, {sixth['target_points']:,} of them (4, 5) labelled 5 and the "
        f"rest its rings. Sampling class 5 from ordinary noise: median miss {_f(sixth['median_distance'])}, "
        f"{_pct(sixth['share_reached'])} within {radius:g} (best {_f(sixth['min_distance'])}); classes 0-4 land on "
        f"their own ring {_pct(sixth['own_ring_after'])} of the time after the fine-tune, "
        f"{_pct(sixth['own_ring_before'])} before.",
        "Reached (4, 5): " + (", ".join(worked) if worked else "none") + "; failed: "
        + (", ".join(failed) if failed else "none") + ". Trajectories: bonus_trajectory.png (approach 2) and "
        "bonus_approaches.png (approaches 1, 3 and 4).",
    ]


def _sched(g: dict) -> str:
    return schedule_name(g["w"], g["power"])


#: Each question's label -> the function that answers it from the results.
ANSWERS = {
    "NF Q1": answer_nf_q1, "NF Q2": answer_nf_q2, "NF Q3": answer_nf_q3, "NF Q4": answer_nf_q4,
    "NF Q5": answer_nf_q5, "FM Q1": answer_fm_q1, "FM Q2": answer_fm_q2, "FM Q3": answer_fm_q3,
    "FM Q4": answer_fm_q4, "FM Q5": answer_fm_q5, "Conditional Q1": answer_cfm_q1,
    "Conditional Q2": answer_cfm_q2, "Conditional Q3": answer_cfm_q3, "Bonus": answer_bonus,
}
