"""The combined loss: alpha * (KD + tap_weight * features) + (1 - alpha) * cross-entropy, for a few alphas (two with --quick).

python examples/03_combined_alpha.py --quick
"""

import common
import keras

import kdistill

args = common.arguments(__doc__)
splits = common.data(args)
teacher = common.teacher(args, splits)

results = {}
alphas = (0.0, 0.9) if args.quick else (0.0, 0.5, 0.9)  # 0.0 = labels only (the baseline), 0.9 = mostly the teacher
for alpha in alphas:
    keras.utils.set_random_seed(0)  # the same initial student for every alpha
    student = kdistill.students.get("mobilenet_v2", num_classes=10, width=0.35)
    distiller = kdistill.FeatureDistiller(
        teacher,
        student,
        taps=None,  # None: the preset pair of middle stages
        feature_loss="normalized_mse",
        tap_weights=10.0,
        logits_loss="kl",
        alpha=alpha,
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    # splits.train reshuffles itself every epoch; shuffle=False just tells Keras not to try (it would warn).
    distiller.fit(splits.train, epochs=common.epochs(args), verbose=0, shuffle=False)
    results[alpha] = kdistill.evaluation.evaluate(distiller.student, splits.test)["top1"]
    print(f"alpha={alpha}: test top-1 {results[alpha]:.4f}")
